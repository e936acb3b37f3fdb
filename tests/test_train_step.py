"""The train step on a mesh: sharded equals single-device, BatchNorm modes, gradient
accumulation, the non-finite guard. 8 fake CPU devices, float32, a tiny 3D-ConvNet
(the step knows no architecture; this one compiles in seconds, I3D in half a minute)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from i3d_jax import sharding
from i3d_jax.kernels.cpu import conv as cpu_conv
from i3d_jax.kernels.cpu import make_kernels
from i3d_jax.models import build_model
from i3d_jax.train import StepFunctions, TrainState, jit_train_step, state_key

NUM_CLASSES = 5
CLIP = (4, 16, 16, 3)  # frames, height, width, channels
BATCH = 16


def tiny_model(**fields):
    return build_model("conv3d", num_classes=NUM_CLASSES, width_multiplier=1 / 16,
                       clip_shape=CLIP[:3], dropout_rate=0.0, **fields)


def batches(count, batch=BATCH, seed=0):
    rng = np.random.default_rng(seed)
    return [{"rgb": rng.uniform(-1, 1, (batch, *CLIP)).astype(np.float32),
             "label": rng.integers(0, NUM_CLASSES, batch).astype(np.int32)}
            for _ in range(count)]


def step_functions(mesh, model=None, **kwargs):
    # A small rate: float32 rounding differs between one device and eight
    # (sums in another order) and a large one amplifies it step by step.
    schedule = optax.constant_schedule(0.01)
    return StepFunctions(model=model or tiny_model(), optimizer=optax.sgd(schedule, momentum=0.9),
                         schedule=schedule, stream_names=("rgb",), mesh=mesh,
                         num_batch_groups=sharding.data_parallel_size(mesh), **kwargs)


@functools.lru_cache(maxsize=None)
def initial_state():
    """One init for every test (its compile is most of its cost), on device 0."""
    fns = step_functions(sharding.make_mesh(1, 1, devices=jax.devices()[:1]))
    return jax.jit(fns.init)(state_key(0), jnp.zeros((1, *CLIP)))


_STEPS = {}


def kernels_for(gradient_form=None, kernels=None):
    """`kernels` ("xla", "cpu" or a set), or the CPU set with `gradient_form`; None:
    the model's default ("auto")."""
    return make_kernels("onednn", gradient_form) if gradient_form else kernels


def compiled_step(mesh, fsdp_min_size, frozen, kernels=None, **kwargs):
    """The jitted step and state shardings, shared by tests that ask for the same."""
    key = (tuple(mesh.shape.values()), fsdp_min_size, frozen, kernels,
           tuple(sorted(kwargs.items())))
    if key not in _STEPS:
        fields = {**({"frozen_batch_norm": True} if frozen else {}),
                  **({"kernels": kernels} if kernels else {})}
        model = tiny_model(**fields) if fields else None
        fns = step_functions(mesh, model, **kwargs)
        shardings = sharding.tree_shardings(initial_state(), mesh,
                                            fsdp_min_size)
        _STEPS[key] = jit_train_step(fns, shardings, mesh), shardings
    return _STEPS[key]


def run_steps(mesh, data, *, fsdp_min_size=64, frozen=False, gradient_form=None, kernels=None,
              **kwargs):
    """(states after each step as numpy, losses, last state) of len(data) steps on
    `mesh`; the CPU kernels with `gradient_form` (one of cpu_conv.GRADIENT_FORMS),
    or `kernels`, in place of the model's default."""
    step, shardings = compiled_step(mesh, fsdp_min_size, frozen,
                                    kernels_for(gradient_form, kernels), **kwargs)
    # A copy: the step donates its state.
    state = jax.device_put(jax.tree.map(jnp.copy, initial_state()), shardings)
    states, losses = [], []
    for batch in data:
        state, metrics = step(state, sharding.global_batch(batch, mesh))
        losses.append(float(metrics["loss"]))
        states.append(jax.tree.map(np.asarray, {"params": state.params,
                                                "batch_stats": state.batch_stats}))
    return states, losses, state


def assert_trees_close(a, b, rtol, atol=1e-6):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol,
                                   err_msg=jax.tree_util.keystr(path))


def assert_updates_close(after, expected_after, before, rtol):
    """Each leaf's change from `before` equals the expected change to within
    `rtol` of the expected change's largest entry: float32 sums in another order
    move it by ~1e-4 of that (whichever gradient form), a wrong reduction or
    statistic by the order of the update itself."""
    for (path, x), y, b in zip(jax.tree_util.tree_leaves_with_path(after),
                               jax.tree.leaves(expected_after), jax.tree.leaves(before)):
        expected = y - b
        np.testing.assert_allclose(x - b, expected, rtol=0, atol=rtol * np.max(np.abs(expected)),
                                   err_msg=jax.tree_util.keystr(path))


@functools.lru_cache(maxsize=None)
def single_device_steps(gradient_form=None):
    mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
    return run_steps(mesh, batches(3), gradient_form=gradient_form)


@pytest.fixture(scope="module")
def single_device_run():
    return single_device_steps()


# Each gradient form on the data-parallel mesh ("lax" is what the CPU kernels
# use under the XLA flag i3d_jax adds; "matrix_products" under XLA's
# defaults), this process's with fsdp.
@pytest.mark.parametrize("data,fsdp,form", [*((8, 1, form) for form in cpu_conv.GRADIENT_FORMS),
                                            (2, 4, None)])
def test_sharded_steps_equal_one_device(data, fsdp, form):
    assert len(jax.devices()) == 8
    mesh = sharding.make_mesh(data, fsdp)
    states, losses, final = run_steps(mesh, batches(3), gradient_form=form)
    expected_states, expected_losses, _ = single_device_steps(form)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    # Parameters after 3 steps, and the BatchNorm statistics of the global batch.
    start = jax.tree.map(np.asarray, {"params": initial_state().params,
                                      "batch_stats": initial_state().batch_stats})
    assert_updates_close(states[-1], expected_states[-1], start, rtol=1e-3)
    if fsdp > 1:
        specs = [leaf.sharding.spec for leaf in jax.tree.leaves(final.params)]
        assert any("fsdp" in spec for spec in specs), "no parameter was sharded over fsdp"
        assert any(spec == jax.sharding.PartitionSpec() for spec in specs)


def test_per_device_batch_norm_uses_each_shards_statistics(single_device_run):
    """per_device: each device's 2 clips normalised by their own statistics; the
    running statistics are the average of the 8 shards' updates."""
    mesh = sharding.make_mesh(8, 1)
    batch = batches(1)[0]
    states, losses, _ = run_steps(mesh, [batch], batch_norm="per_device")

    one = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
    fns = step_functions(one)
    state = initial_state()
    loss_fn = jax.jit(fns.loss_fn)
    shard_losses, shard_stats = [], []
    for d in range(8):
        shard = jax.tree.map(lambda x: x[2 * d:2 * d + 2], batch)
        loss, (stats, _) = loss_fn(state.params, state.batch_stats, shard, state_key(1))
        shard_losses.append(float(loss))
        shard_stats.append(stats)
    np.testing.assert_allclose(losses[0], np.mean(shard_losses), rtol=1e-5)
    expected = jax.tree.map(lambda *s: np.mean(s, axis=0), *shard_stats)
    assert_trees_close(states[0]["batch_stats"], expected, rtol=1e-5)
    # ... which is not what the whole batch's statistics give: the variances'
    # updates (new - old running average) differ.
    whole = single_device_run[0][0]["batch_stats"]
    start = jax.tree.map(np.asarray, initial_state().batch_stats)
    # fc6: each shard's 2 clips give far other statistics than all 16.
    update = lambda tree: tree["fc6"]["batch_norm"]["var"] - start["fc6"]["batch_norm"]["var"]  # noqa: E731,E501
    assert not np.allclose(update(states[0]["batch_stats"]), update(whole), rtol=1e-2)


def test_gradient_accumulation_equals_one_big_batch():
    """Two micro-batches of 8 = one step on 16, with BatchNorm frozen (its
    statistics would otherwise differ by construction)."""
    mesh = sharding.make_mesh(8, 1)
    data = batches(2)
    accumulated, acc_losses, _ = run_steps(mesh, data, frozen=True, batch_norm="frozen",
                                           grad_accum_steps=2)
    whole, whole_losses, _ = run_steps(mesh, data, frozen=True, batch_norm="frozen")
    np.testing.assert_allclose(acc_losses, whole_losses, rtol=1e-5)
    assert_trees_close(accumulated[-1]["params"], whole[-1]["params"], rtol=1e-5)
    # Frozen: the running statistics never moved.
    assert_trees_close(accumulated[-1]["batch_stats"], whole[0]["batch_stats"], rtol=0, atol=0)


# The CPU kernels keep the state through a conditional, XLA's through a select.
@pytest.mark.parametrize("kernels", ["cpu", "xla"])
def test_non_finite_loss_freezes_the_state_and_names_the_step(kernels):
    mesh = sharding.make_mesh(8, 1)
    data = batches(3)
    data[1]["rgb"][0, 0, 0, 0, 0] = np.nan
    states, losses, final = run_steps(mesh, data, kernels=kernels)
    assert np.isfinite(losses[0]) and not np.isfinite(losses[1])
    assert int(final.first_bad_step) == 2  # the second step went wrong
    assert int(final.step) == 1  # ... and nothing after the first was kept
    assert_trees_close(states[2], states[0], rtol=0, atol=0)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(states[2]))


def test_state_is_a_pytree_of_arrays():
    state = initial_state()
    assert isinstance(state, TrainState)
    assert state.step.shape == () and state.first_bad_step.dtype == jnp.int32


@pytest.mark.parametrize("data,fsdp,devices,message", [
    (3, 1, 8, "multiple of 3"),
    (16, 1, 8, "there are 8"),
    (-1, -1, 8, "both be -1"),
    (0, 1, 8, "positive"),
])
def test_bad_meshes_are_refused(data, fsdp, devices, message):
    with pytest.raises(ValueError, match=message):
        sharding.mesh_shape(data, fsdp, devices)


def test_batch_must_split_over_the_mesh():
    mesh = sharding.make_mesh(8, 1)
    with pytest.raises(ValueError, match="batch_size=12 does not split over the mesh's 8"):
        sharding.check_batch_size(12, mesh)


def test_fsdp_rule_shards_the_largest_divisible_axis():
    P = jax.sharding.PartitionSpec
    assert sharding.fsdp_spec((3, 3, 3, 64, 192), 4, min_size=1) == P(None, None, None, None,
                                                                      "fsdp")
    assert sharding.fsdp_spec((3, 3, 3, 64, 190), 4, min_size=1) == P(None, None, None, "fsdp",
                                                                      None)
    assert sharding.fsdp_spec((7, 5), 4, min_size=1) == P()
    assert sharding.fsdp_spec((1024, 400), 4) == P("fsdp", None)
    assert sharding.fsdp_spec((400,), 4) == P()  # too small to be worth it


def test_bfloat16_computes_in_bf16_with_float32_master_weights(single_device_run):
    mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
    fns = step_functions(mesh, tiny_model(dtype=jnp.bfloat16))
    state = jax.tree.map(jnp.copy, initial_state())
    batch = batches(1)[0]
    lowered = jax.jit(fns.train_step).lower(state, batch)
    convolutions = [line for line in lowered.as_text().splitlines() if "convolution" in line]
    assert convolutions and all("bf16" in line for line in convolutions)
    new_state, metrics = lowered.compile()(state, batch)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new_state.params))
    # The same loss as float32's to bf16 precision, not bit for bit.
    fp32_loss = single_device_run[1][0]
    assert float(metrics["loss"]) == pytest.approx(fp32_loss, rel=2e-2)
    assert float(metrics["loss"]) != fp32_loss


def test_fsdp_holds_an_eighth_of_the_state_per_device():
    """Parameter and optimiser bytes on one device, from the live arrays' shards:
    fsdp=8 against data=8 (replicated)."""

    def bytes_on_device_0(state):
        total = 0
        for leaf in jax.tree.leaves((state.params, state.opt_state)):
            for shard in leaf.addressable_shards:
                if shard.device == jax.devices()[0]:
                    total += shard.data.nbytes
        return total

    replicated = run_steps(sharding.make_mesh(8, 1), batches(1), fsdp_min_size=256)[2]
    sharded = run_steps(sharding.make_mesh(1, 8), batches(1), fsdp_min_size=256)[2]
    ratio = bytes_on_device_0(sharded) / bytes_on_device_0(replicated)
    # 1/8 but for the leaves under 256 elements or with no axis 8 divides.
    assert 1 / 8 <= ratio < 0.15, ratio


def test_classifier_only_training_updates_the_classifier_alone_and_skips_the_trunk_backward():
    """trainable="classifier" (the paper's fixed-feature transfer): after two steps
    the trunk's parameters and BatchNorm statistics are bitwise what they were, the
    classifier moved, and the compiled step does a fraction of the full step's FLOPs
    (no backward pass through the trunk)."""
    from i3d_jax.configs import default_config
    from i3d_jax.train import make_optimizer

    mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
    config = default_config(lock=False)
    config.optimizer.name, config.trainable = "sgd", "classifier"
    schedule = optax.constant_schedule(0.1)
    model = tiny_model(frozen_batch_norm=True)

    def step_and_flops(**kwargs):
        fns = StepFunctions(model=model, schedule=schedule, stream_names=("rgb",), mesh=mesh,
                            batch_norm="frozen", **kwargs)
        state = jax.jit(fns.init)(state_key(0), jnp.zeros((1, *CLIP)))
        batch = sharding.global_batch(batches(1)[0], mesh)
        compiled = jax.jit(fns.train_step).lower(state, batch).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return fns, state, compiled, float(cost["flops"])

    fns, state, step, classifier_flops = step_and_flops(
        optimizer=make_optimizer(config, schedule), trainable="classifier")
    before = jax.tree.map(np.asarray, {"params": state.params, "batch_stats": state.batch_stats})
    config.trainable = "all"
    *_, full_flops = step_and_flops(optimizer=make_optimizer(config, schedule))
    for batch in batches(2):
        state, metrics = step(state, sharding.global_batch(batch, mesh))
        assert np.isfinite(float(metrics["loss"]))
    moved = []
    for path, old in jax.tree_util.tree_leaves_with_path(before["params"]):
        new = np.asarray(functools.reduce(lambda node, k: node[k.key], path, state.params))
        if "Logits" in jax.tree_util.keystr(path):
            moved.append(not np.array_equal(old, new))
        else:
            np.testing.assert_array_equal(old, new, err_msg=jax.tree_util.keystr(path))
    assert moved and all(moved)
    unchanged = jax.tree.map(lambda a, b: np.array_equal(a, np.asarray(b)),
                              before["batch_stats"], state.batch_stats)
    assert all(jax.tree.leaves(unchanged))
    # Forward of the trunk + the classifier's gradient, against forward + full backward.
    assert classifier_flops < 0.6 * full_flops, (classifier_flops, full_flops)


def test_eval_step_averages_the_logits_of_every_view():
    """A batch of 2 videos x 3 views (clips or crops): each video's logits are the mean
    of its views' logits, each view through the model on its own."""
    mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
    fns = step_functions(mesh)
    state = initial_state()
    views = np.random.default_rng(3).uniform(-1, 1, (2, 3, *CLIP)).astype(np.float32)
    out = jax.jit(fns.eval_step)(state.params, state.batch_stats, {"rgb": views})
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    per_view = np.stack([[np.asarray(fns.model.apply(variables, views[b, v][None],
                                                     train=False))[0] for v in range(3)]
                         for b in range(2)])
    np.testing.assert_allclose(out["logits"], per_view.mean(axis=1), rtol=1e-5, atol=1e-6)
    assert not np.allclose(per_view[:, 0], per_view[:, 1])  # the views differ
