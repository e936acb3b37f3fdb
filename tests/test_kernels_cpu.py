"""The CPU kernels (`i3d_jax.kernels.cpu`: what "auto" chooses on the CPU
backend) compute lax's (and flax's) values and gradients: convolution,
max-pool and BatchNorm, checked here on the shapes the architectures use
(strided, 1x1x1, narrow and wide channels, 2D and 3D) and on a whole train
step's gradients."""
import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from i3d_jax import sharding
from i3d_jax.kernels import XLA, host, xla_flags
from i3d_jax.kernels.cpu import conv as cpu_conv
from i3d_jax.kernels.cpu import cpu_kernels, gradient_form, make_kernels, onednn, reductions
from i3d_jax.models import build_model
from i3d_jax.models.layers import BatchNorm

_LAYOUTS = onednn.CHANNELS_LAST
# The CPU set (this process's forms) and XLA's, by name.
KERNELS = {"cpu": make_kernels("onednn", "lax"), "xla": XLA}


def _relative(ours, theirs) -> float:
    return float(jnp.max(jnp.abs(ours - theirs)) / jnp.max(jnp.abs(theirs)))


@pytest.mark.parametrize("shape,kernel,strides", [
    ((2, 9, 11, 10, 3), (7, 7, 7), (2, 2, 2)),      # I3D's first conv: strided, 3 channels
    ((2, 6, 11, 10, 5), (3, 3, 3), (1, 1, 1)),      # kernel gradient grouped along width
    ((1, 4, 6, 6, 130), (3, 3, 3), (1, 1, 1)),      # wide: one product per tap
    ((2, 5, 8, 7, 64), (3, 2, 3), (2, 2, 1)),       # wide and strided, uneven pads
    ((2, 4, 7, 7, 6), (1, 1, 1), (1, 1, 1)),        # a matrix product
    ((2, 4, 6, 6, 4), (2, 2, 2), (1, 1, 1)),        # even kernel: SAME pads more at the end
    ((2, 1, 11, 10, 3), (3, 3, 3), (1, 2, 2)),      # one frame
    ((1, 2, 3, 3, 40), (3, 3, 3), (1, 1, 1)),       # kernel larger than the activations
    ((1, 2, 3, 4, 40), (2, 2, 2), (1, 1, 1)),       # that, with SAME's uneven pads
    ((2, 11, 10, 3), (7, 7), (2, 2)),               # Inception-v1's first conv
    ((1, 11, 9, 20), (7, 7), (2, 2)),               # that on a flow stack: phases
    ((1, 10, 11, 16), (2, 1), (3, 2)),              # kernel smaller than the strides
    ((2, 11, 10, 4), (3, 3), (1, 1)),
])
@pytest.mark.parametrize("gradients", cpu_conv.GRADIENT_FORMS)
@pytest.mark.parametrize("forward", cpu_conv.FORWARD_FORMS)
def test_convolution_values_and_gradients_are_lax_s(shape, kernel, strides, gradients, forward):
    rank = len(kernel)
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    w = jax.random.normal(jax.random.PRNGKey(1), (*kernel, shape[-1], 4))
    numbers = lax.conv_dimension_numbers(x.shape, w.shape, _LAYOUTS[rank])
    cotangent_key = jax.random.PRNGKey(2)

    def value_and_grads(conv):
        y, pull = jax.vjp(lambda x, w: conv(x, w, strides, "SAME", dimension_numbers=numbers), x, w)
        return y, pull(jax.random.normal(cotangent_key, y.shape))

    def ours(x, w, strides, padding, dimension_numbers):
        return cpu_conv.same_conv(x, w, strides, gradients, forward)

    ours_y, (ours_dx, ours_dw) = jax.jit(lambda: value_and_grads(ours))()
    y, (dx, dw) = value_and_grads(lax.conv_general_dilated)
    assert ours_y.shape == y.shape
    assert _relative(ours_y, y) < 1e-5
    assert _relative(ours_dx, dx) < 1e-5
    assert _relative(ours_dw, dw) < 1e-5


def test_unknown_forms_are_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match="matrix_products"):
        cpu_conv.same_conv(jnp.zeros((1, 2, 4, 4, 3)), jnp.zeros((1, 1, 1, 3, 2)), (1, 1, 1), "eigen")
    with pytest.raises(ValueError, match="stacked_taps"):
        cpu_conv.same_conv(jnp.zeros((1, 2, 4, 4, 3)), jnp.zeros((1, 1, 1, 3, 2)), (1, 1, 1), "lax",
                           "eigen")
    with pytest.raises(ValueError, match="stacked_taps"):
        make_kernels("eigen", "lax")


@pytest.mark.parametrize("flags, ynnpack", [
    ("", True),
    ("--xla_force_host_platform_device_count=8", True),
    ("--xla_cpu_experimental_ynn_fusion_type=dot", False),
    ("--xla_force_host_platform_device_count=8 --xla_cpu_experimental_ynn_fusion_type=", False),
    ("--xla_cpu_experimental_ynn_fusion_type='dot,eltwise'", False),
    ("--xla_cpu_experimental_ynn_fusion_type=+dot", True),
    ("--xla_cpu_experimental_ynn_fusion_type=-eltwise,-reduce", True),
    ("--xla_cpu_experimental_ynn_fusion_type=+dot --xla_cpu_experimental_ynn_fusion_type=dot", False),
    ("--xla_cpu_experimental_ynn_fusion_type=dot --xla_cpu_experimental_ynn_fusion_type=+dot", True),
])
def test_whether_ynnpack_runs_convolutions_is_read_from_xla_flags(flags, ynnpack):
    assert xla_flags.ynnpack_runs_convolutions(flags) is ynnpack


def test_the_gradient_form_follows_the_flags_xla_started_with_and_the_cpu():
    no_amx, amx = frozenset({"avx2", "avx512f"}), frozenset({"avx512f", "amx_tile"})
    assert gradient_form("--xla_cpu_experimental_ynn_fusion_type=dot", no_amx) == "lax"
    assert gradient_form("--xla_force_host_platform_device_count=8", no_amx) == "matrix_products"
    assert gradient_form("", no_amx) == "matrix_products"
    # On AMX lax's is the faster with YNNPACK's convolutions too.
    assert gradient_form("", amx) == "lax"
    assert gradient_form("--xla_cpu_experimental_ynn_fusion_type=dot", amx) == "lax"


def test_the_pinned_jaxlib_runs_onednn_convolutions():
    # The fast forward form: were a new jaxlib to drop the custom call, "auto"
    # would quietly fall back to XLA's own kernels.
    assert onednn.available()
    kernels, why = cpu_kernels("--xla_cpu_experimental_ynn_fusion_type=dot", require_onednn=True)
    assert kernels is make_kernels("onednn", "lax"), why
    assert kernels.description == "oneDNN forward convolutions, lax kernel gradients"


def test_the_cpu_kernels_put_the_first_conv_on_onednn():
    model = build_model("i3d", num_classes=5, width_multiplier=0.25, kernels="cpu")
    x = jnp.zeros((1, 8, 64, 64, 3))
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    hlo = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).as_text()
    # Conv3d_1a_7x7 (135 MFLOP here) alone reaches cpu_conv.ONEDNN_MIN_FLOPS.
    assert hlo.count("__onednn$convolution") == 1


def test_small_convolutions_keep_xla_s_own_and_stay_cacheable():
    x, w = jnp.zeros((1, 4, 16, 16, 8)), jnp.zeros((3, 3, 3, 8, 8))
    dimension_numbers = lax.conv_dimension_numbers(x.shape, w.shape, _LAYOUTS[3])
    convolve = jax.jit(lambda x, w: cpu_conv.conv_general_dilated(
        x, w, (1, 1, 1), "SAME", dimension_numbers=dimension_numbers, forward="onednn",
        gradients="lax"))
    compiled = convolve.lower(x, w).compile()
    assert "__onednn" not in compiled.as_text()
    assert compiled.runtime_executable().serialize()  # what the persistent cache stores


@pytest.mark.parametrize("gradients", cpu_conv.GRADIENT_FORMS)
def test_bfloat16_convolutions_take_onednn_where_the_cpu_has_bfloat16(gradients):
    # bfloat16 operands, so that both sides sum the same (rounded) products;
    # lax sums them in float32, and ours must come within bfloat16's rounding.
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 9, 8, 24)).astype(jnp.bfloat16)
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 24, 16)).astype(jnp.bfloat16)
    dy = jax.random.normal(jax.random.PRNGKey(2), (2, 5, 9, 8, 16)).astype(jnp.bfloat16)
    numbers = lax.conv_dimension_numbers(x.shape, w.shape, _LAYOUTS[3])

    def value_and_grads(conv, x, w, dy):
        y, pull = jax.vjp(conv, x, w)
        return (y, *pull(dy))

    ours = jax.jit(lambda x, w, dy: value_and_grads(
        lambda x, w: cpu_conv.same_conv(x, w, (1, 1, 1), gradients, "onednn"), x, w, dy))
    lowered = ours.lower(x, w, dy).as_text()
    # The forward and the stride-1 input gradient; only where the CPU has them.
    assert lowered.count("__onednn$convolution") == (2 if host.has_native_bf16() else 0)
    assert onednn.available("bfloat16") == host.has_native_bf16()
    theirs = value_and_grads(lambda x, w: lax.conv_general_dilated(
        x, w, (1, 1, 1), "SAME", dimension_numbers=numbers),
        *(a.astype(jnp.float32) for a in (x, w, dy)))
    for mine, reference in zip(ours(x, w, dy), theirs):
        assert mine.dtype == jnp.bfloat16
        assert _relative(mine.astype(jnp.float32), reference) < 1e-2


@pytest.mark.parametrize("shape,kernel,strides,pads", [
    ((2, 5, 9, 8, 3), (3, 3, 3), (1, 1, 1), ((1, 1), (1, 1), (1, 1))),
    ((1, 9, 11, 10, 3), (7, 7, 7), (2, 2, 2), ((3, 3), (2, 3), (3, 2))),   # I3D's first, odd sizes
    ((2, 4, 6, 6, 4), (2, 2, 2), (1, 1, 1), ((0, 1), (0, 1), (0, 1))),     # even kernel
    ((2, 3, 7, 7, 5), (1, 3, 3), (1, 2, 1), ((0, 0), (0, 0), (1, 1))),     # no pads on two axes
    ((2, 4, 6, 6, 6), (1, 1, 1), (1, 1, 1), ((0, 0), (0, 0), (0, 0))),
    ((2, 11, 10, 4), (3, 3), (2, 1), ((1, 1), (0, 2))),                      # 2D
])
@pytest.mark.parametrize("kernel_out_in", [False, True])
def test_onednn_convolution_values_are_lax_s(shape, kernel, strides, pads, kernel_out_in):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    w = jax.random.normal(jax.random.PRNGKey(1), (*kernel, shape[-1], 3))
    given = jnp.swapaxes(w, -1, -2) if kernel_out_in else w  # [*kernel, 3, C]
    ours = jax.jit(onednn.conv, static_argnums=(2, 3, 4))(x, given, strides, pads, kernel_out_in)
    theirs = lax.conv_general_dilated(
        x, w, strides, pads,
        dimension_numbers=lax.conv_dimension_numbers(x.shape, w.shape, _LAYOUTS[len(kernel)]))
    assert ours.shape == theirs.shape
    assert _relative(ours, theirs) < 1e-5


@pytest.mark.parametrize("kernel_out_in", [False, True])
def test_onednn_convolution_keeps_a_sharded_batch_sharded(kernel_out_in):
    # Without its partitioning rule XLA gathers the batch onto every device
    # and each computes the whole batch's convolution.
    assert len(jax.devices()) == 8
    mesh = jax.make_mesh((2, 4), ("data", "fsdp"))
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 4, 6, 6, 3))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 3, 4))
    strides, pads = (1, 2, 1), ((1, 1), (0, 1), (1, 1))
    given = jnp.swapaxes(w, 3, 4) if kernel_out_in else w
    sharded_x = jax.device_put(x, NamedSharding(mesh, P(("data", "fsdp"))))
    # The kernel's last axis sharded as FSDP shards it: output channels, or
    # input channels in [*kernel, out, in].
    sharded_w = jax.device_put(given, NamedSharding(mesh, P(None, None, None, None,
                                                            None if kernel_out_in else "fsdp")))
    convolve = jax.jit(onednn.conv, static_argnums=(2, 3, 4))
    hlo = convolve.lower(sharded_x, sharded_w, strides, pads, kernel_out_in).compile().as_text()
    assert re.findall(r"(\S+) custom-call\(", hlo) == ["f32[1,4,3,6,4]{4,3,2,1,0}"]
    ours = convolve(sharded_x, sharded_w, strides, pads, kernel_out_in)
    assert ours.sharding.spec[0] == ("data", "fsdp")
    theirs = lax.conv_general_dilated(x, w, strides, pads,
                                      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    assert _relative(ours, theirs) < 1e-5


@pytest.mark.parametrize("gradients", cpu_conv.GRADIENT_FORMS)
def test_gradients_of_a_sharded_batch_are_one_device_s(gradients):
    """The batch over 8 devices, the kernel's output channels over 4 (as the
    train step's FSDP shards them): oneDNN's partitioning rule in the forward
    and the input gradient, each form's kernel gradient (the laid-out one's
    batch-into-images reshapes included). The stacked-taps forward has no rule
    of ours: XLA partitions it alone."""
    forward = "onednn"
    mesh = sharding.make_mesh(2, 4)
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 4, 6, 6, 16))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 16, 8))
    dy = jax.random.normal(jax.random.PRNGKey(2), (8, 4, 6, 6, 8))

    @jax.jit
    def grads(x, w, dy):
        return jax.vjp(lambda x, w: cpu_conv.same_conv(x, w, (1, 1, 1), gradients, forward),
                       x, w)[1](dy)

    batch = NamedSharding(mesh, P(("data", "fsdp")))
    dx, dw = grads(jax.device_put(x, batch),
                   jax.device_put(w, NamedSharding(mesh, P(None, None, None, None, "fsdp"))),
                   jax.device_put(dy, batch))
    one_dx, one_dw = grads(x, w, dy)
    assert dx.sharding.spec[0] == ("data", "fsdp")
    assert _relative(dx, one_dx) < 1e-5
    assert _relative(dw, one_dw) < 1e-5


def test_onednn_convolution_vmaps_into_its_batch():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 4, 6, 6, 3))
    w = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 3, 3, 3, 5))
    pads = ((1, 1), (1, 1), (1, 1))
    lax_conv = lambda x, w: lax.conv_general_dilated(  # noqa: E731
        x, w, (1, 1, 1), pads, dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    shared = jax.jit(jax.vmap(lambda x: onednn.conv(x, w[0], (1, 1, 1), pads)))(x)
    assert _relative(shared, jax.vmap(lambda x: lax_conv(x, w[0]))(x)) < 1e-5
    each = jax.jit(jax.vmap(lambda x, w: onednn.conv(x, w, (1, 1, 1), pads)))(x[:2], w)
    assert _relative(each, jax.vmap(lax_conv)(x[:2], w)) < 1e-5


def test_onednn_convolution_names_mismatched_shapes():
    with pytest.raises(ValueError, match=r"input channels 3 != kernel's 4"):
        onednn.conv(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 4, 2)), (1, 1), ((1, 1), (1, 1)))
    with pytest.raises(ValueError, match=r"input channels 3 != kernel's 2 .*\[\*spatial, out, in\]"):
        onednn.conv(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 3, 2)), (1, 1), ((1, 1), (1, 1)),
                    kernel_out_in=True)
    with pytest.raises(ValueError, match="not a channels-last"):
        onednn.conv(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 3, 3, 2)), (1, 1), ((1, 1), (1, 1)))


def test_other_convolutions_go_to_lax_unchanged():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 5, 8, 8, 2))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 2, 4))
    numbers = lax.conv_dimension_numbers(x.shape, w.shape, _LAYOUTS[3])
    for padding, dilation in [("VALID", (1, 1, 1)), ("SAME", (2, 1, 1))]:
        chex.assert_trees_all_equal(
            cpu_conv.conv_general_dilated(x, w, (1, 1, 1), padding, rhs_dilation=dilation,
                                          dimension_numbers=numbers, forward="onednn",
                                          gradients="lax"),
            lax.conv_general_dilated(x, w, (1, 1, 1), padding, rhs_dilation=dilation,
                                     dimension_numbers=numbers))


@pytest.mark.parametrize("shape,window,strides", [
    ((2, 7, 9, 9, 4), (1, 3, 3), (1, 2, 2)),
    ((2, 7, 9, 9, 4), (3, 1, 1), (2, 1, 1)),
    ((2, 7, 8, 8, 4), (2, 2, 2), (2, 2, 2)),
    ((2, 5, 6, 6, 3), (3, 3, 3), (1, 1, 1)),
    ((2, 9, 10, 3), (3, 3), (2, 2)),
])
def test_max_pool_gives_lax_s_values_and_routes_ties_as_lax_does(shape, window, strides):
    # Values on a grid of halves, and a first clip of zeros where every window
    # ties: lax gives a window's whole gradient to the first of its maxima.
    x = jnp.round(jax.random.normal(jax.random.PRNGKey(0), shape) * 2) / 2
    x = x.at[0].set(0.0)
    reference = lambda x: nn.max_pool(x, window, strides=strides, padding="SAME")  # noqa: E731
    y, pull = jax.vjp(reference, x)
    cotangent = jax.random.normal(jax.random.PRNGKey(1), y.shape)
    ours_y, ours_pull = jax.vjp(lambda x: reductions.max_pool_same(x, window, strides), x)
    chex.assert_trees_all_equal(ours_y, y)
    chex.assert_trees_all_close(jax.jit(ours_pull)(cotangent), pull(cotangent), atol=1e-5)
    # In the tied clip only the first input of each window gets one (a rule
    # sharing ties would give one to every input of the window).
    routed = jax.jit(ours_pull)(jnp.ones_like(y))[0][0]
    assert int(jnp.sum(routed != 0)) < x[0].size


@pytest.mark.parametrize("shape,use_scale", [
    ((2, 4, 6, 5, 7), True),      # a 3D unit's activations
    ((2, 4, 6, 5, 7), False),     # the Inception units: no scale
    ((3, 5, 4, 6), False),        # Inception-v1 (2D)
    ((2, 3, 16), True),           # the ConvNet+LSTM's features [batch, time, C]
    ((3, 16), True),              # the 3D-ConvNet's fully connected units
])
@pytest.mark.parametrize("kernels", ["cpu", "xla"])
def test_batch_norm_is_flax_s_in_values_statistics_and_gradients(shape, use_scale, kernels):
    """Our BatchNorm against flax's nn.BatchNorm in float64: the same variables,
    output, updated running averages and gradients (of the input, scale and
    offset) in training; the same output on running averages."""
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.PRNGKey(0), 4)
        # Off-centre, so that E[x^2] - E[x]^2 has something to cancel.
        x = 3 * jax.random.normal(keys[0], shape, jnp.float64) + 1.5
        weights = jax.random.normal(keys[1], shape, jnp.float64)
        fields = {"momentum": 0.9, "epsilon": 1e-3, "use_scale": use_scale,
                  "param_dtype": jnp.float64}
        reference = nn.BatchNorm(use_running_average=False, **fields)
        ours = BatchNorm(use_running_average=False, kernels=KERNELS[kernels], **fields)
        variables = reference.init(keys[2], x)
        chex.assert_trees_all_equal_shapes_and_dtypes(ours.init(keys[2], x), variables)
        variables = jax.tree.map(  # not the initial (0, 1) statistics, scale 1, offset 0
            lambda v: v + 0.3 * jax.random.normal(keys[3], v.shape, v.dtype), variables)

        def loss(model, params, x):
            y, state = model.apply({**variables, "params": params}, x, mutable=["batch_stats"])
            return jnp.sum(jnp.sin(y) * weights), state

        def outputs(model):
            (value, state), grads = jax.jit(
                jax.value_and_grad(loss, argnums=(1, 2), has_aux=True), static_argnums=0)(
                    model, variables["params"], x)
            frozen = model.clone(use_running_average=True).apply(variables, x)
            return value, state, grads, frozen

        chex.assert_trees_all_close(outputs(ours), outputs(reference), rtol=1e-10, atol=1e-12)


def test_batch_norm_keeps_its_compute_dtype():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4, 4, 8)).astype(jnp.bfloat16)
    norm = BatchNorm(use_running_average=False, dtype=jnp.bfloat16, kernels=KERNELS["cpu"])
    variables = norm.init(jax.random.PRNGKey(1), x)
    y, state = norm.apply(variables, x, mutable=["batch_stats"])
    assert y.dtype == jnp.bfloat16
    assert jax.tree.map(lambda v: v.dtype, state) == {"batch_stats": {"mean": jnp.float32,
                                                                      "var": jnp.float32}}
    dx = jax.grad(lambda x: jnp.sum(norm.apply(variables, x, mutable=["batch_stats"])[0]
                                    .astype(jnp.float32) ** 2))(x)
    assert dx.dtype == jnp.bfloat16


@pytest.mark.parametrize("form", cpu_conv.GRADIENT_FORMS)
def test_a_train_step_s_gradients_are_the_native_ones(form):
    # Each gradient form, whichever this process would pick.
    # In float64: in float32 the two orders of summation flip a few ReLUs and
    # max-pool choices, and the gradients of those units differ by ~1e-3.
    with jax.enable_x64(True):
        x = jax.random.uniform(jax.random.PRNGKey(0), (2, 4, 24, 24, 3), jnp.float64,
                               minval=-1, maxval=1)
        labels = jnp.array([1, 3])

        def gradients(kernels):
            # Up to Mixed_3b: the strided 7x7x7 conv, 1x1x1 and 3x3x3 convs, the
            # stem's and a block's max-pools; the rest repeats them (and compiles long).
            model = build_model("i3d", num_classes=5, width_multiplier=1 / 16, kernels=kernels,
                                dtype=jnp.float64, final_endpoint="Mixed_3b")
            variables = jax.tree.map(lambda v: v.astype(jnp.float64),
                                     model.init(jax.random.PRNGKey(1), x, train=False))

            def loss(params):
                features, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                          x, train=True, mutable=["batch_stats"])
                logits = features.mean(axis=(1, 2, 3))[:, :5]
                return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(2), labels])

            return jax.jit(jax.value_and_grad(loss))(variables["params"])

        (ours_loss, ours), (loss, theirs) = gradients(make_kernels("onednn", form)), gradients(XLA)
    np.testing.assert_allclose(ours_loss, loss, rtol=1e-10)
    leaves = jax.tree_util.tree_leaves_with_path(ours)
    assert len(leaves) == 18  # the 9 units' kernels and BatchNorm offsets
    # Gradients that are zero in exact arithmetic (BatchNorm offsets followed by
    # another BatchNorm) come out as rounding noise: an absolute floor of 1e-12
    # of the largest gradient.
    floor = 1e-12 * max(float(jnp.max(jnp.abs(b))) for b in jax.tree.leaves(theirs))
    for (path, a), b in zip(leaves, jax.tree.leaves(theirs)):
        assert a.dtype == jnp.float64
        scale = float(jnp.max(jnp.abs(b)))
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-8 * scale + floor, jax.tree_util.keystr(path)


def test_global_norm_is_optax_s():
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    tree = {"kernel": jax.random.normal(keys[0], (3, 3, 16, 32)),   # as a matrix product
            "odd": jax.random.normal(keys[1], (4099,)),             # not a multiple of 8
            "small": jax.random.normal(keys[2], (64,)),
            "scaled": 1e3 * jax.random.normal(keys[3], (64, 128)),
            "bf16": jax.random.normal(keys[4], (128, 64)).astype(jnp.bfloat16)}
    ours = jax.jit(reductions.global_norm)(tree)
    assert ours.dtype == jnp.float32
    leaves = [np.asarray(leaf, np.float64).ravel() for leaf in jax.tree.leaves(tree)]
    exact = np.sqrt(sum(np.dot(leaf, leaf) for leaf in leaves))
    np.testing.assert_allclose(float(ours), exact, rtol=1e-6)
    np.testing.assert_allclose(float(ours), float(optax.global_norm(tree)), rtol=1e-6)
    assert np.isnan(float(reductions.global_norm({**tree, "kernel": tree["kernel"].at[1].set(jnp.nan)})))
    assert np.isinf(float(reductions.global_norm({**tree, "kernel": tree["kernel"].at[1].set(jnp.inf)})))
