"""The shared layers' kernels: the `kernels` field chooses what a model
computes with per module (and so per jit trace), reaches every 3D conv and
every BatchNorm of every architecture, and the FLOP count uses XLA's own
convolutions; every BatchNorm has TF's constants."""
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from i3d_jax.kernels import XLA
from i3d_jax.kernels.cpu import make_kernels
from i3d_jax.models import ARCHITECTURES, InceptionI3d, build_model
from i3d_jax.models.layers import BATCH_NORM_DECAY, BATCH_NORM_EPSILON, BatchNorm
from i3d_jax.models.stats import abstract_variables, summarise

# How StableHLO writes a convolution with three spatial axes.
CONV_3D = "dim_numbers = [b, 0, 1, 2, f]"
# The CPU set with XLA's own forward convolutions (stacked taps): no custom call.
STACKED_TAPS = make_kernels("stacked_taps", "lax")


def _convs_3d(lowered) -> int:
    return lowered.as_text().count(CONV_3D)


def _kernels_3d(variables) -> int:
    return sum(1 for leaf in jax.tree.leaves(variables["params"]) if len(leaf.shape) == 5)


@functools.partial(jax.jit, static_argnums=0)
def _forward(model, variables, x):
    return model.apply(variables, x, train=False)


def test_one_jitted_function_gives_each_kernel_set_its_own_trace():
    # A global switch read while tracing fails exactly here: a function traced
    # once keeps that trace's convolution whatever the switch says later. As a
    # field, the set is part of the (static) model, so of jit's cache key.
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 5, 33, 31, 3), minval=-1, maxval=1)
    models = {name: InceptionI3d(width_multiplier=1 / 16, final_endpoint="Mixed_3b",
                                 **({"kernels": kernels} if kernels else {}))
              for name, kernels in (("default", None), ("xla", XLA), ("cpu", STACKED_TAPS))}
    assert models["default"].kernels is XLA  # a model built directly computes with lax
    variables = jax.jit(lambda key: models["xla"].init(key, x, train=False))(jax.random.PRNGKey(1))
    units = _kernels_3d(variables)
    assert units == 9  # three stem convs and the block's six
    for model in models.values():
        chex.assert_trees_all_equal_shapes_and_dtypes(
            jax.eval_shape(lambda key: model.init(key, x, train=False), jax.random.PRNGKey(1)),
            variables)

    counts = {name: _convs_3d(_forward.lower(model, variables, x)) for name, model in models.items()}
    assert counts == {"default": units, "xla": units, "cpu": 0}

    stacked = _forward(models["cpu"], variables, x)
    native = _forward(models["xla"], variables, x)
    assert _forward._cache_size() == 2
    scale = float(jnp.abs(native).max())
    chex.assert_trees_all_close(stacked, native, atol=1e-5 * scale, rtol=1e-4)


def _abstract_inputs(arch):
    clip = lambda frames, channels=3: jax.ShapeDtypeStruct((1, frames, 32, 32, channels), jnp.float32)  # noqa: E731
    return {
        "i3d": clip(4),
        "inception_v1": jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32),
        "convnet_lstm": clip(2),
        "conv3d": clip(4),
        "two_stream": {"rgb": clip(1), "flow": clip(10, 2)},
        "two_stream_fused": {"rgb": clip(2), "flow": clip(20, 2)},
        "two_stream_i3d": {"rgb": clip(4), "flow": clip(4, 2)},
    }[arch]


def _tiny(arch, **fields):
    fields = {"num_classes": 5, "width_multiplier": 1 / 16, **fields}
    if arch == "conv3d":
        fields["clip_shape"] = (4, 32, 32)
    return build_model(arch, **fields)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_the_kernels_reach_every_3d_conv_and_every_batch_norm_has_tf_constants(arch):
    inputs = _abstract_inputs(arch)
    batch_norms = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, BatchNorm) and context.method_name == "__call__":
            batch_norms.append(context.module)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        variables = abstract_variables(_tiny(arch, kernels=STACKED_TAPS), inputs)
    assert batch_norms
    for norm in batch_norms:
        assert (norm.momentum, norm.epsilon) == (BATCH_NORM_DECAY, BATCH_NORM_EPSILON), norm.name
        assert norm.param_dtype == jnp.float32
        # The model's set reaches every BatchNorm (its default would be XLA's).
        assert norm.kernels is STACKED_TAPS, norm.name

    counts = {
        name: _convs_3d(
            jax.jit(lambda v, x, model=_tiny(arch, kernels=kernels): model.apply(v, x, train=False))
            .lower(variables, inputs))
        for name, kernels in (("xla", "xla"), ("cpu", STACKED_TAPS))
    }
    # Every 3D kernel is one native 3D convolution, and none is left native
    # under the CPU set (2D architectures have neither).
    assert counts == {"xla": _kernels_3d(variables), "cpu": 0}
    if arch in ("i3d", "conv3d", "two_stream_fused", "two_stream_i3d"):
        assert counts["xla"] > 0


def _compiled_flops(model, variables, inputs) -> float:
    lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, inputs)
    cost = lowered.compile().cost_analysis()
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def test_summary_counts_the_native_convolutions():
    # conv3d at 1/16 width compiles in seconds at the paper's 16x112x112.
    # The rewrite pads time explicitly, so XLA would also count the taps
    # that fall on that padding: more FLOPs for the same network.
    model = build_model("conv3d", width_multiplier=0.0625)
    inputs = jax.ShapeDtypeStruct((1, 16, 112, 112, 3), jnp.float32)
    variables = abstract_variables(model, inputs)
    native = _compiled_flops(model.clone(kernels=XLA), variables, inputs)
    stacked = _compiled_flops(model.clone(kernels=STACKED_TAPS), variables, inputs)
    assert stacked > 1.05 * native
    assert summarise("conv3d", width_multiplier=0.0625)["flops"] == native


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_unknown_kernels_name_the_accepted_ones(arch):
    with pytest.raises(ValueError, match="kernels 'cudnn' is not one of auto, xla, cpu"):
        build_model(arch, kernels="cudnn")
