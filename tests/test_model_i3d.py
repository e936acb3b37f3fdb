"""The I3D layers against TensorFlow's own ops, and the model's contract."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i3d_jax.models import ENDPOINTS, InceptionI3d
from i3d_jax.models.i3d import Unit3D, max_pool_same


@pytest.fixture(scope="module")
def tf():
    tf = pytest.importorskip("tensorflow")
    tf.config.set_visible_devices([], "GPU")
    return tf


@pytest.mark.parametrize("shape,kernel,strides", [
    ((1, 9, 13, 10, 3), (7, 7, 7), (2, 2, 2)),  # odd sizes: TF pads the extra pixel at the end
    ((2, 6, 11, 12, 4), (3, 3, 3), (1, 1, 1)),
    ((1, 5, 8, 9, 2), (1, 1, 1), (1, 1, 1)),
])
def test_unit3d_equals_tf_conv_same_and_batch_norm(tf, shape, kernel, strides):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    unit = Unit3D(5, kernel, strides)
    variables = unit.init(jax.random.PRNGKey(0), x, train=False)
    variables = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32), variables)
    variables["batch_stats"]["batch_norm"]["var"] = np.abs(variables["batch_stats"]["batch_norm"]["var"])
    ours = unit.apply(variables, x, train=False)

    p, s = variables["params"], variables["batch_stats"]["batch_norm"]
    y = tf.nn.conv3d(x, p["conv_3d"]["kernel"], strides=(1, *strides, 1), padding="SAME")
    y = tf.nn.batch_normalization(y, s["mean"], s["var"], p["batch_norm"]["bias"], None, 1e-3)
    chex.assert_trees_all_close(ours, tf.nn.relu(y).numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("window,strides", [((1, 3, 3), (1, 2, 2)), ((3, 3, 3), (2, 2, 2)),
                                            ((2, 2, 2), (2, 2, 2)), ((3, 3, 3), (1, 1, 1))])
def test_max_pool_equals_tf_same(tf, window, strides):
    # Negative inputs too: SAME max-pool must pad with -inf, not zero.
    x = np.random.default_rng(1).normal(size=(1, 7, 9, 10, 3)).astype(np.float32)
    ours = max_pool_same(x, window, strides)
    theirs = tf.nn.max_pool3d(x, (1, *window, 1), (1, *strides, 1), "SAME").numpy()
    chex.assert_trees_all_close(ours, theirs)


@pytest.fixture(scope="module")
def small_model_and_variables():
    model = InceptionI3d(num_classes=7)
    x = jnp.zeros((1, 8, 64, 64, 3))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    # Non-trivial statistics (small means, variances around 1) so eval and
    # train modes differ but activations stay alive through every block.
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 1000))
    stats = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(next(keys), a.shape), variables["batch_stats"])
    return model, {"params": variables["params"], "batch_stats": stats}


@pytest.mark.parametrize("frames", [1, 3, 9])
def test_any_clip_length_gives_finite_logits(small_model_and_variables, frames):
    model, variables = small_model_and_variables
    x = jax.random.uniform(jax.random.PRNGKey(frames), (2, frames, 64, 64, 3), minval=-1, maxval=1)
    logits, endpoints = model.apply(variables, x, train=False, return_endpoints=True)
    assert logits.shape == (2, 7)
    assert np.isfinite(np.asarray(logits)).all()
    # Logits are the time average of the per-time logits.
    chex.assert_trees_all_close(logits, endpoints["LogitsPerTime"].mean(axis=1), atol=1e-5)
    assert list(endpoints) == list(ENDPOINTS)


def test_final_endpoint_stops_early_and_matches_full_model(small_model_and_variables):
    model, variables = small_model_and_variables
    x = jax.random.uniform(jax.random.PRNGKey(3), (1, 8, 64, 64, 3), minval=-1, maxval=1)
    _, endpoints = model.apply(variables, x, train=False, return_endpoints=True)
    truncated = InceptionI3d(num_classes=7, final_endpoint="Mixed_4c")
    out = truncated.apply(variables, x, train=False)
    chex.assert_trees_all_close(out, endpoints["Mixed_4c"], atol=1e-5)
    params = truncated.init(jax.random.PRNGKey(0), x, train=False)["params"]
    assert "Mixed_4d" not in params and "Logits" not in params
    assert out.shape == (1, 2, 4, 4, 512)


def test_unknown_endpoint_and_bad_rank_are_named():
    with pytest.raises(ValueError, match="Mixed_9z"):
        InceptionI3d(final_endpoint="Mixed_9z").init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 32, 32, 3)), train=False)
    with pytest.raises(ValueError, match=r"\(4, 32, 32, 3\)"):
        InceptionI3d().init(jax.random.PRNGKey(0), jnp.zeros((4, 32, 32, 3)), train=False)


def test_bfloat16_compute_keeps_float32_params_and_tracks_float32(small_model_and_variables):
    model, variables = small_model_and_variables
    x = jax.random.uniform(jax.random.PRNGKey(4), (1, 8, 64, 64, 3), minval=-1, maxval=1)
    bf16 = InceptionI3d(num_classes=7, dtype=jnp.bfloat16)
    init = bf16.init(jax.random.PRNGKey(0), x, train=False)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(init))
    _, ep16 = bf16.apply(variables, x, train=False, return_endpoints=True)
    _, ep32 = model.apply(variables, x, train=False, return_endpoints=True)
    assert ep16["Mixed_5c"].dtype == jnp.bfloat16
    f16, f32 = np.asarray(ep16["AvgPool"]), np.asarray(ep32["AvgPool"])
    assert np.abs(f16 - f32).max() / np.abs(f32).max() < 5e-2


def test_train_mode_applies_dropout_and_eval_is_deterministic(small_model_and_variables):
    model, variables = small_model_and_variables
    x = jax.random.uniform(jax.random.PRNGKey(5), (2, 8, 64, 64, 3), minval=-1, maxval=1)
    logits_a, logits_b = (
        model.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(k)},
                    mutable=["batch_stats"])[0]
        for k in (0, 1)
    )
    assert not np.allclose(logits_a, logits_b), "dropout should differ between rng keys"
    chex.assert_trees_all_close(model.apply(variables, x, train=False),
                                model.apply(variables, x, train=False))


def test_batch_norm_running_stats_use_decay_0999_and_eps_1e3():
    x = np.random.default_rng(2).normal(2.0, 3.0, size=(4, 3, 5, 5, 2)).astype(np.float32)
    unit = Unit3D(3, (1, 1, 1), activation=None)
    variables = unit.init(jax.random.PRNGKey(0), x, train=False)
    out, updated = unit.apply(variables, x, train=True, mutable=["batch_stats"])
    conv = x @ np.asarray(variables["params"]["conv_3d"]["kernel"]).reshape(2, 3)
    batch_mean, batch_var = conv.mean(axis=(0, 1, 2, 3)), conv.var(axis=(0, 1, 2, 3))
    stats = updated["batch_stats"]["batch_norm"]
    chex.assert_trees_all_close(stats["mean"], 0.001 * batch_mean, atol=1e-5)
    chex.assert_trees_all_close(stats["var"], 0.999 + 0.001 * batch_var, atol=1e-5)
    chex.assert_trees_all_close(out, (conv - batch_mean) / np.sqrt(batch_var + 1e-3), atol=1e-4)


@pytest.mark.parametrize("frames,kernel,strides", [(9, (7, 7, 7), (2, 2, 2)), (6, (3, 3, 3), (1, 1, 1)),
                                                   (5, (2, 1, 1), (2, 1, 1)), (1, (3, 3, 3), (1, 2, 2))])
def test_conv3d_as_2d_equals_lax_conv_in_values_and_gradients(frames, kernel, strides):
    from jax import lax

    from i3d_jax.models.i3d import conv3d_as_2d

    x = jax.random.normal(jax.random.PRNGKey(0), (2, frames, 11, 10, 3))
    w = jax.random.normal(jax.random.PRNGKey(1), (*kernel, 3, 4))
    numbers = lax.conv_dimension_numbers(x.shape, w.shape, ("NDHWC", "DHWIO", "NDHWC"))

    def loss(conv, x, w):
        return jnp.sum(jnp.sin(conv(x, w, strides, "SAME", dimension_numbers=numbers)))

    chex.assert_trees_all_close(
        conv3d_as_2d(x, w, strides, "SAME", dimension_numbers=numbers),
        lax.conv_general_dilated(x, w, strides, "SAME", dimension_numbers=numbers), atol=1e-4)
    chex.assert_trees_all_close(jax.grad(loss, argnums=(1, 2))(conv3d_as_2d, x, w),
                                jax.grad(loss, argnums=(1, 2))(lax.conv_general_dilated, x, w),
                                atol=1e-3, rtol=1e-4)


def test_conv3d_as_2d_leaves_other_convolutions_to_lax():
    from jax import lax

    from i3d_jax.models.i3d import conv3d_as_2d

    x = jax.random.normal(jax.random.PRNGKey(0), (1, 6, 9, 9, 2))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 2, 4))
    numbers = lax.conv_dimension_numbers(x.shape, w.shape, ("NDHWC", "DHWIO", "NDHWC"))
    for padding, dilation in [("VALID", (1, 1, 1)), ("SAME", (2, 1, 1))]:
        chex.assert_trees_all_close(
            conv3d_as_2d(x, w, (1, 1, 1), padding, rhs_dilation=dilation, dimension_numbers=numbers),
            lax.conv_general_dilated(x, w, (1, 1, 1), padding, rhs_dilation=dilation, dimension_numbers=numbers))
