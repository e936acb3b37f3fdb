"""2D -> 3D inflation: the boring-video fixed point, layer by layer and end to
end, the flow stream's first conv, classifiers, and every Inception-based
architecture's `init_from`."""

import functools
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from i3d_jax.convert.common import CheckpointMismatchError
from i3d_jax.inflate import INCEPTION_SUBTREES, init_from_inception_v1, inflate_variables
from i3d_jax.models import ENDPOINTS_2D, build_model
from i3d_jax.models.i3d import InceptionBlock, InceptionI3d, Unit, max_pool_same
from i3d_jax.models.inception_v1 import InceptionV1, endpoint_3d
from i3d_jax.models.stats import abstract_variables
from variables_for_tests import random_variables

WIDTH = 1 / 8
CLASSES = 10


def _source(batch_norm_scale=False, width=WIDTH):
    model = InceptionV1(
        num_classes=CLASSES, width_multiplier=width, batch_norm_scale=batch_norm_scale
    )
    abstract = abstract_variables(model, jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    return model, random_variables(abstract, seed=3)


def _i3d_target(in_channels=3, num_classes=CLASSES, width=WIDTH):
    model = InceptionI3d(num_classes=num_classes, width_multiplier=width)
    return model, abstract_variables(
        model, jax.ShapeDtypeStruct((1, 8, 64, 64, in_channels), jnp.float32)
    )


def _repeat(x, frames):
    """A boring video: [B, ...] -> [B, frames, ...], the same frame every step."""
    return jnp.repeat(x[:, None], frames, axis=1)


def clean_steps(frames: int, kernel: int, stride: int, lo: int = 0, hi: int | None = None):
    """Output steps of a TF SAME op (temporal `kernel`, `stride`) whose
    window lies inside input steps [lo, hi]: those that padding does not
    reach. Returns (output length, first clean, last clean)."""
    hi = frames - 1 if hi is None else hi
    out = math.ceil(frames / stride)
    before = max((out - 1) * stride + kernel - frames, 0) // 2
    clean = [
        i
        for i in range(out)
        if i * stride - before >= lo and i * stride - before + kernel - 1 <= hi
    ]
    return out, (clean[0], clean[-1]) if clean else (1, 0)


# Each I3D layer, applied alone: (kind, temporal kernel, strides). Convs take
# their kernel from the inflated parameters; strides are I3D's.
I3D_LAYERS = {
    "Conv3d_1a_7x7": ("unit", (2, 2, 2)),
    "MaxPool3d_2a_3x3": ("pool", (1, 3, 3), (1, 2, 2)),
    "Conv3d_2b_1x1": ("unit", (1, 1, 1)),
    "Conv3d_2c_3x3": ("unit", (1, 1, 1)),
    "MaxPool3d_3a_3x3": ("pool", (1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ("pool", (3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ("pool", (2, 2, 2), (2, 2, 2)),
}


def _i3d_layer(name, variables):
    """fn(boring video) -> (output, temporal kernel, temporal stride, zero-padded)."""
    params, stats = variables["params"], variables["batch_stats"]
    local = lambda: {"params": params[name], "batch_stats": stats.get(name, {})}  # noqa: E731
    if name.startswith("Mixed"):
        channels = tuple(
            params[name][unit]["conv_3d"]["kernel"].shape[-1]
            for unit in (
                "Branch_0_Conv3d_0a_1x1",
                "Branch_1_Conv3d_0a_1x1",
                "Branch_1_Conv3d_0b_3x3",
                "Branch_2_Conv3d_0a_1x1",
                "Branch_2_Conv3d_0b_3x3",
                "Branch_3_Conv3d_0b_1x1",
            )
        )
        block = InceptionBlock(channels)
        return lambda x: (block.apply(local(), x, train=False), 3, 1, True)
    if name == "AvgPool":

        def avg_pool(x):
            _, t, h, w, _ = x.shape
            pooled = nn.avg_pool(x, (min(2, t), min(7, h), min(7, w)), strides=(1, 1, 1))
            return pooled.mean(axis=(2, 3)), 2, 1, False

        return avg_pool
    if name == "Logits":
        kernel = params[name]["conv_3d"]["kernel"]
        logits = Unit(
            kernel.shape[-1], kernel.shape[:3], use_batch_norm=False, use_bias=True, activation=None
        )
        return lambda x: (
            logits.apply({"params": params[name]}, x[:, :, None, None], train=False)[:, :, 0, 0],
            1,
            1,
            True,
        )
    kind, *spec = I3D_LAYERS[name]
    if kind == "pool":
        window, strides = spec
        # Max-pools pad with -inf, which a repeated frame never loses to.
        return lambda x: (max_pool_same(x, window, strides), window[0], strides[0], False)
    kernel = params[name]["conv_3d"]["kernel"]
    unit = Unit(kernel.shape[-1], kernel.shape[:3], spec[0])
    return lambda x: (unit.apply(local(), x, train=False), kernel.shape[0], spec[0][0], True)


@pytest.mark.parametrize("source_scale", [False, True], ids=["slim-like", "with-gamma"])
def test_each_inflated_layer_is_its_2d_layer_on_a_boring_video(source_scale):
    """Every I3D layer, fed the 2D layer's input repeated over 12 frames,
    gives the 2D layer's output at every step that temporal zero padding
    does not reach (a source with BatchNorm gamma is folded on the way)."""
    model_2d, source = _source(batch_norm_scale=source_scale)
    _, target = _i3d_target()
    inflated = inflate_variables(source, target)
    image = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    _, endpoints_2d = model_2d.apply(source, image, train=False, return_endpoints=True)
    frames = 12
    layer_input = image
    checked = []
    for name in ENDPOINTS_2D:
        expected = endpoints_2d[name]
        out, kernel, stride, padded = _i3d_layer(endpoint_3d(name), inflated)(
            _repeat(layer_input, frames)
        )
        if padded:
            _, (first, last) = clean_steps(frames, kernel, stride)
        else:
            first, last = 0, out.shape[1] - 1
        assert first <= last, name
        chex.assert_trees_all_close(
            out[:, first : last + 1],
            _repeat(expected, last - first + 1),
            atol=1e-5,
            rtol=1e-5,
            custom_message=name,
        )
        checked.append(name)
        layer_input = expected
    assert checked == list(ENDPOINTS_2D)


# I3D's temporal ops in order, as (kernel, stride, SAME padding): zero-padded
# convs and blocks and, conservatively, max-pools.
I3D_TEMPORAL_OPS = (
    [
        (7, 2, True),
        (1, 1, True),
        (1, 1, True),
        (3, 1, True),
        (1, 1, True),
        (3, 1, True),
        (3, 1, True),
        (3, 2, True),
    ]
    + [(3, 1, True)] * 5
    + [(2, 2, True), (3, 1, True), (3, 1, True), (2, 1, False)]
)


def _clean_average_pool_steps(frames: int):
    """AvgPool steps of I3D on `frames` frames that no temporal padding reaches."""
    n, lo, hi = frames, 0, frames - 1
    for kernel, stride, same in I3D_TEMPORAL_OPS:
        if same:
            n, (lo, hi) = clean_steps(n, kernel, stride, lo, hi)
        else:  # VALID: output i reads i .. i + kernel - 1
            n, lo, hi = n - kernel + 1, lo, hi - kernel + 1
    return n, lo, hi


def test_inflated_i3d_on_a_boring_video_is_the_2d_network_away_from_its_ends():
    """End to end: I3D's receptive field spans 99 frames, so on a 128-frame
    boring video only the middle AvgPool steps escape temporal padding: there
    I3D equals the 2D network; elsewhere padding moves them, by the measured
    figures below (this network, seed and frame)."""
    model_2d, source = _source()
    model_3d, target = _i3d_target()
    inflated = inflate_variables(source, target)
    image = np.random.default_rng(1).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    logits_2d, endpoints_2d = model_2d.apply(source, image, train=False, return_endpoints=True)
    frames = 128
    logits_3d, endpoints_3d = jax.jit(
        lambda v, x: model_3d.apply(v, x, train=False, return_endpoints=True)
    )(inflated, _repeat(image, frames))
    steps, first, last = _clean_average_pool_steps(frames)
    features_2d, features_3d = endpoints_2d["AvgPool"], endpoints_3d["AvgPool"]
    assert features_3d.shape[1] == steps == 15 and (first, last) == (6, 8)
    chex.assert_trees_all_close(
        features_3d[:, first : last + 1],
        _repeat(features_2d, last - first + 1),
        atol=1e-4,
        rtol=1e-5,
    )
    # Padding's deviation, relative to the largest 2D value. Measured: 0.065
    # at the first and last steps of the features (falling to 3e-4 five steps
    # in) and 0.017 on the logits averaged over time (0.036 on 64 frames).
    scale = float(jnp.abs(features_2d).max())
    padded = float(jnp.abs(features_3d - features_2d[:, None]).max()) / scale
    logits = float(jnp.abs(logits_3d - logits_2d).max()) / float(jnp.abs(logits_2d).max())
    assert 0.03 < padded < 0.1 and 0.008 < logits < 0.03, (padded, logits)


def test_flow_first_conv_averages_rgb_filters_over_channels():
    """A flow frame whose x and y both equal a gray image a gives the inflated
    first conv 2/3 of the RGB conv's response to (a, a, a): each of the 2
    channels carries the mean of the 3 RGB filters."""
    _, source = _source()
    _, target = _i3d_target(in_channels=2)
    inflated = inflate_variables(source, target)
    gray = np.random.default_rng(2).uniform(-1, 1, (1, 32, 32, 1)).astype(np.float32)
    kernel_2d = source["params"]["Conv2d_1a_7x7"]["conv_2d"]
    kernel_3d = inflated["params"]["Conv3d_1a_7x7"]["conv_3d"]

    def conv(k, strides):
        features, kernel = k["kernel"].shape[-1], k["kernel"].shape[:-2]
        return Unit(features, kernel, strides, use_batch_norm=False, activation=None)

    rgb = conv(kernel_2d, (2, 2)).apply(
        {"params": {"conv_2d": kernel_2d}}, np.repeat(gray, 3, -1), train=False
    )
    flow = conv(kernel_3d, (2, 2, 2)).apply(
        {"params": {"conv_3d": kernel_3d}}, _repeat(np.repeat(gray, 2, -1), 12), train=False
    )
    chex.assert_trees_all_close(flow[:, 1:4], _repeat(rgb * 2 / 3, 3), atol=1e-5, rtol=1e-5)
    # Everything after the first conv is the RGB inflation.
    rgb_inflated = inflate_variables(source, _i3d_target()[1])
    for path, value in traverse_util.flatten_dict(inflated).items():
        if path[1] != "Conv3d_1a_7x7" or path[-1] != "kernel":
            np.testing.assert_array_equal(value, traverse_util.flatten_dict(rgb_inflated)[path])


def test_classifier_of_another_size_is_initialised_afresh():
    _, source = _source()
    _, target = _i3d_target(num_classes=400)
    inflated = inflate_variables(source, target, rng=jax.random.PRNGKey(5))
    logits = inflated["params"]["Logits"]["conv_3d"]
    assert logits["kernel"].shape == (1, 1, 1, 128, 400)
    np.testing.assert_array_equal(logits["bias"], np.zeros(400))
    # LeCun normal: standard deviation 1/sqrt(fan in), fan in 128.
    assert 0.8 < logits["kernel"].std() * math.sqrt(128) < 1.2
    # A concrete target keeps its own fresh classifier.
    concrete = random_variables(target, seed=9)
    kept = inflate_variables(source, concrete)
    np.testing.assert_array_equal(
        kept["params"]["Logits"]["conv_3d"]["kernel"],
        concrete["params"]["Logits"]["conv_3d"]["kernel"],
    )


def test_mismatched_source_is_reported_by_name():
    _, source = _source()
    _, target = _i3d_target()
    del source["params"]["Mixed_4c"]["Branch_1_Conv2d_0b_3x3"]
    with pytest.raises(
        CheckpointMismatchError, match="params/Mixed_4c/Branch_1_Conv3d_0b_3x3/conv_3d/kernel"
    ):
        inflate_variables(source, target)
    _, wider = _source(width=1 / 4)
    with pytest.raises(
        CheckpointMismatchError, match=r"mis-shaped params/Conv3d_2b_1x1/conv_3d/kernel"
    ):
        inflate_variables(wider, target)


# Tiny inputs (shapes only matter) per Inception-based architecture.
TINY_INPUTS = {
    "inception_v1": (1, 64, 64, 3),
    "i3d": (1, 8, 64, 64, 2),  # a flow I3D
    "convnet_lstm": (1, 2, 64, 64, 3),
    "two_stream": {"rgb": (1, 1, 64, 64, 3), "flow": (1, 10, 64, 64, 2)},
    "two_stream_fused": {"rgb": (1, 2, 64, 64, 3), "flow": (1, 20, 64, 64, 2)},
    "two_stream_i3d": {"rgb": (1, 8, 64, 64, 3), "flow": (1, 8, 64, 64, 2)},
}


@pytest.mark.parametrize("arch", sorted(INCEPTION_SUBTREES))
def test_init_from_fills_every_inception_network_of_an_architecture(arch):
    """2D streams take the 2D parameters as they are (a flow stream's first
    conv adapted to its channels); 3D ones take them inflated; the layers
    the architecture adds keep their initial values."""
    _, source = _source()
    model = build_model(arch, num_classes=CLASSES, width_multiplier=WIDTH)
    inputs = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s, jnp.float32),
        TINY_INPUTS[arch],
        is_leaf=lambda x: isinstance(x, tuple),
    )
    initial = random_variables(abstract_variables(model, inputs), seed=11)
    variables = init_from_inception_v1(arch, initial, source)
    flat_source = traverse_util.flatten_dict(source)
    flat_initial = traverse_util.flatten_dict(initial)
    subtrees = INCEPTION_SUBTREES[arch]
    for path, value in traverse_util.flatten_dict(variables).items():
        sub = next((s for s in subtrees if path[1 : 1 + len(s)] == s), None)
        if sub is None:
            np.testing.assert_array_equal(value, flat_initial[path], err_msg=str(path))
            continue
        local = path[1 + len(sub) :]
        src = flat_source.get(
            (path[0], *(k.replace("Conv3d", "Conv2d").replace("conv_3d", "conv_2d") for k in local))
        )
        if local[0] == "Logits" and (src is None or src.shape[-1] != value.shape[-1]):
            np.testing.assert_array_equal(value, flat_initial[path])
            continue
        assert src is not None, f"{path} took nothing from the source"
        if local[0] == "Conv3d_1a_7x7" or local[0] == "Conv2d_1a_7x7":
            if local[-1] == "kernel" and value.shape[-2] != src.shape[-2]:
                src = np.repeat(src.mean(axis=-2, keepdims=True), value.shape[-2], axis=-2)
        if value.ndim == src.ndim + 1:  # a 3D kernel: its time slices add up to the 2D kernel
            value = value.sum(axis=0)
        np.testing.assert_allclose(value, src, rtol=1e-6, atol=1e-7, err_msg=str(path))


def test_conv3d_has_nothing_to_inflate():
    _, source = _source()
    with pytest.raises(ValueError, match="conv3d has no Inception-v1 layers"):
        init_from_inception_v1("conv3d", {"params": {}, "batch_stats": {}}, source)


def _abstract_and_init(arch, num_classes=CLASSES):
    model = build_model(arch, num_classes=num_classes, width_multiplier=WIDTH)
    inputs = jax.tree.map(
        lambda s: jnp.zeros(s, jnp.float32), TINY_INPUTS[arch], is_leaf=lambda x: isinstance(x, tuple)
    )
    return abstract_variables(model, inputs), lambda key: model.init(key, inputs, train=False)


def _added_layers(init, key, arch):
    """The leaves of `init(key)` outside the Inception networks, computed
    alone (jitted, so the rest of the init is dead code)."""
    subtrees = INCEPTION_SUBTREES[arch]

    def added(k):
        flat = traverse_util.flatten_dict(dict(init(k)))
        return {
            "/".join(p): v for p, v in flat.items()
            if not any(p[1 : 1 + len(s)] == s for s in subtrees)
        }

    return jax.jit(added)(key)


@pytest.mark.parametrize(("arch", "num_classes"), [("two_stream_fused", CLASSES), ("i3d", 400)])
def test_init_from_an_abstract_target_is_concrete_and_what_init_gives(arch, num_classes):
    """An eval_shape-first trainer passes ShapeDtypeStructs: every leaf comes
    back an array, the Inception ones from the source, the rest (the fusion
    layers; a classifier of another size) as the model's init(key) has them."""
    _, source = _source()
    abstract, init = _abstract_and_init(arch, num_classes)
    key = jax.random.PRNGKey(7)
    variables = init_from_inception_v1(arch, abstract, source, rng=key, init=init)

    flat = traverse_util.flatten_dict(variables)
    flat_abstract = traverse_util.flatten_dict(abstract)
    assert flat.keys() == flat_abstract.keys()
    for path, value in flat.items():
        assert isinstance(value, np.ndarray), f"{'/'.join(path)} is {type(value).__name__}"
        assert (value.shape, value.dtype) == (flat_abstract[path].shape, flat_abstract[path].dtype)

    # Inside the Inception networks: what inflate_variables gives them.
    for sub in INCEPTION_SUBTREES[arch]:
        local = {c: functools.reduce(lambda node, k: node[k], sub, abstract[c])
                 for c in ("params", "batch_stats")}
        want = traverse_util.flatten_dict(inflate_variables(source, local, rng=key))
        for (collection, *rest), value in want.items():
            if rest[0] == "Logits" and num_classes != CLASSES:
                continue  # no classifier of this size in the source: from init, below
            np.testing.assert_array_equal(flat[(collection, *sub, *rest)], value)

    # Outside them, and a classifier the source cannot give: init's values.
    added = {k: np.asarray(v) for k, v in _added_layers(init, key, arch).items()}
    if num_classes != CLASSES:
        classifier = traverse_util.flatten_dict(dict(jax.jit(
            lambda k: init(k)["params"]["Logits"])(key)))
        added.update({"params/Logits/" + "/".join(p): np.asarray(v) for p, v in classifier.items()})
    assert added, "nothing to take from init"
    for name, want in added.items():
        np.testing.assert_array_equal(flat[tuple(name.split("/"))], want, err_msg=name)


def test_init_from_an_abstract_target_without_init_names_the_leaves_it_cannot_fill():
    _, source = _source()
    abstract, _ = _abstract_and_init("two_stream_fused")
    with pytest.raises(ValueError, match=r"6 of its leaves.*params/Conv3d_fusion_3x3/conv_3d/kernel.*init="):
        init_from_inception_v1("two_stream_fused", abstract, source)
