"""Forward convolutions through the oneDNN kernels that XLA:CPU carries.

jaxlib's XLA:CPU links oneDNN and runs a custom call named
`__onednn$convolution` with oneDNN's direct convolution, but the pass that
would rewrite convolutions into it is not built into jaxlib's wheels: its
convolutions run on Eigen's. Here a primitive lowers to that custom call
itself: oneDNN's float32 3D convolutions run about twice as fast as XLA's 2D
convolution over stacked taps, with float32 sums like XLA's (not reduced
precision). Where the CPU has bfloat16 arithmetic (`host.has_native_bf16`),
bfloat16 ones run on it too (docs/benchmarks.md has the figures).

The custom call's configuration is XLA's `OneDnnConvolutionConfig` proto as
JSON in the instruction's backend config, in the encoding the runtime of
jaxlib 0.10 reads (spatial dimensions zero-based, strides, pads and
dilations as they are). `available(dtype)` compiles and checks a small
convolution once per process and dtype; where it fails (a jaxlib built without oneDNN)
callers keep XLA's own convolutions. Only the CPU lowering is the custom
call; elsewhere the primitive is lax's convolution. It has no
differentiation rules of its own: `conv.conv3d_same` holds the gradients.
"""
from __future__ import annotations

import functools
import json
import logging

import jax
import numpy as np
from jax import lax
from jax._src import core, dispatch
from jax._src.interpreters import mlir
from jax.experimental.custom_partitioning import custom_partitioning
from jax.extend.core import Primitive
from jax.sharding import NamedSharding, PartitionSpec

from i3d_jax.kernels import host

_LOG = logging.getLogger(__name__)
_TARGET = "__onednn$convolution"
# lax's dimension numbers of channels-last convolutions, by spatial rank.
CHANNELS_LAST = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"),
                 3: ("NDHWC", "DHWIO", "NDHWC")}


def _layouts(rank: int, kernel_out_in: bool):
    """lax's dimension numbers; `kernel_out_in`: the kernel is [*spatial, out, in]."""
    data, kernel, out = CHANNELS_LAST[rank]
    return (data, kernel[:-2] + "OI", out) if kernel_out_in else (data, kernel, out)


def _kernel_features(w_shape, kernel_out_in: bool):
    """(input, output) channels of a kernel."""
    return (w_shape[-1], w_shape[-2]) if kernel_out_in else (w_shape[-2], w_shape[-1])


def _output_shape(x_shape, w_shape, strides, pads, kernel_out_in=False):
    spatial = [(size + lo + hi - k) // s + 1 for size, k, s, (lo, hi)
               in zip(x_shape[1:-1], w_shape[:-2], strides, pads)]
    return (x_shape[0], *spatial, _kernel_features(w_shape, kernel_out_in)[1])


def _check(x, w, strides, pads, kernel_out_in=False):
    rank = len(x.shape) - 2
    if rank not in CHANNELS_LAST or len(w.shape) != rank + 2 or len(strides) != rank \
            or len(pads) != rank:
        raise ValueError(f"onednn.conv: input {x.shape}, kernel {w.shape}, strides {strides} "
                         f"and pads {pads} are not a channels-last 1D, 2D or 3D convolution")
    if x.shape[-1] != _kernel_features(w.shape, kernel_out_in)[0]:
        raise ValueError(f"onednn.conv: input channels {x.shape[-1]} != kernel's "
                         f"{_kernel_features(w.shape, kernel_out_in)[0]} (input {x.shape}, kernel "
                         f"{w.shape}, {'[*spatial, out, in]' if kernel_out_in else '[*spatial, in, out]'})")
    if x.dtype != w.dtype:
        raise ValueError(f"onednn.conv: input {x.dtype} and kernel {w.dtype} differ")


def _abstract(x, w, *, strides, pads, kernel_out_in):
    _check(x, w, strides, pads, kernel_out_in)
    return core.ShapedArray(_output_shape(x.shape, w.shape, strides, pads, kernel_out_in),
                            x.dtype)


def backend_config(kernel_shape, strides, pads, kernel_out_in=False) -> str:
    """The custom call's backend config: channels-last input and output,
    a [*spatial, in, out] kernel ([*spatial, out, in] with `kernel_out_in`)."""
    rank = len(strides)
    dims = rank + 2
    data = {"batch_dim": 0, "feature_dim": dims - 1, "spatial_dims": list(range(1, rank + 1))}
    config = {
        "dims": dims,
        "feature_groups": 1,
        "input": {"dims": dims, "data": data},
        "kernel": {"dims": dims, "filter": {
            "input_feature_dim": rank + kernel_out_in, "output_feature_dim": rank + 1 - kernel_out_in,
            "spatial_dims": list(range(rank)), "shape": list(kernel_shape)}},
        "output": {"dims": dims, "data": data},
        "window": {"size": list(kernel_shape[:rank]),
                   "pad_left": [lo for lo, _ in pads], "pad_right": [hi for _, hi in pads],
                   "strides": list(strides), "window_dilations": [1] * rank},
    }
    return json.dumps({"onednn_conv_config": config})


def _lower_cpu(ctx, x, w, *, strides, pads, kernel_out_in):
    x_aval, w_aval = ctx.avals_in
    (out_aval,) = ctx.avals_out
    row_major = [list(range(len(x_aval.shape) - 1, -1, -1))]
    return mlir.custom_call(
        _TARGET, result_types=[mlir.aval_to_ir_type(ctx.module_context, out_aval)],
        operands=[x, w], backend_config=backend_config(w_aval.shape, strides, pads, kernel_out_in),
        api_version=1, operand_layouts=row_major * 2, result_layouts=row_major).results


def _lax_conv(x, w, *, strides, pads, kernel_out_in=False):
    return lax.conv_general_dilated(
        x, w, strides, pads, dimension_numbers=lax.conv_dimension_numbers(
            x.shape, w.shape, _layouts(x.ndim - 2, kernel_out_in)))


_conv_p = Primitive("i3d_onednn_conv")
_conv_p.def_impl(functools.partial(dispatch.apply_primitive, _conv_p))
_conv_p.def_abstract_eval(_abstract)
mlir.register_lowering(_conv_p, mlir.lower_fun(_lax_conv, multiple_results=False))
mlir.register_lowering(_conv_p, _lower_cpu, platform="cpu")


def _batch_spec(sharding) -> PartitionSpec:
    """The sharding of the batch axis alone (the rest replicated)."""
    spec = sharding.spec if isinstance(sharding, NamedSharding) else PartitionSpec()
    return PartitionSpec(spec[0] if len(spec) else None)


def _infer_sharding(mesh, arg_shapes, result_shape):
    return NamedSharding(mesh, _batch_spec(arg_shapes[0].sharding))


def _partition(bind, mesh, arg_shapes, result_shape):
    batch = NamedSharding(mesh, _batch_spec(arg_shapes[0].sharding))
    return mesh, bind, batch, (batch, NamedSharding(mesh, PartitionSpec()))


def _sharding_rule(rank: int, kernel_out_in: bool = False) -> str:
    """Shardy's factors: the batch shared by input and output, the input
    channels by input and kernel, spatial axes each their own."""
    spatial_in, kernel, spatial_out = (" ".join(f"{prefix}{i}" for i in range(rank))
                                       for prefix in "skr")
    features = "f c" if kernel_out_in else "c f"
    return f"b {spatial_in} c, {kernel} {features} -> b {spatial_out} f"


@functools.cache
def _conv_for(strides: tuple, pads: tuple, kernel_out_in: bool):
    """The convolution with these strides and pads: partitioned over the
    batch under jit, vmapped by folding the mapped axis into the batch."""

    # XLA's partitioner knows nothing of the custom call and would gather a
    # sharded batch onto every device, each computing the whole batch's
    # convolution: here the batch stays sharded, each device convolving its
    # part with the whole kernel (as lax's convolution is partitioned).
    def bind(x, w):
        return _conv_p.bind(x, w, strides=strides, pads=pads, kernel_out_in=kernel_out_in)

    @custom_partitioning
    def partitioned(x, w):
        return bind(x, w)

    partitioned.def_partition(
        infer_sharding_from_operands=_infer_sharding,
        partition=functools.partial(_partition, bind),
        sharding_rule=_sharding_rule(len(strides), kernel_out_in))

    @jax.custom_batching.custom_vmap
    def convolve(x, w):
        return partitioned(x, w)

    @convolve.def_vmap
    def _vmapped(axis_size, in_batched, x, w):
        x_batched, w_batched = in_batched
        if w_batched:  # a kernel per mapped element: lax's convolution
            return jax.vmap(functools.partial(_lax_conv, strides=strides, pads=pads,
                                              kernel_out_in=kernel_out_in),
                            in_axes=(0 if x_batched else None, 0))(x, w), True
        out = convolve(x.reshape(axis_size * x.shape[1], *x.shape[2:]), w)
        return out.reshape(axis_size, x.shape[1], *out.shape[1:]), True

    return convolve


def conv(x, w, strides, pads, kernel_out_in: bool = False):
    """x [N, *spatial, C] * w [*kernel, C, F] (w [*kernel, F, C] with
    `kernel_out_in`: oneDNN reorders the kernel anyway, so a transposed one
    costs nothing here, and an input gradient's flipped kernel needs no
    transpose of its own) with explicit `pads` ((lo, hi) per spatial axis),
    no dilation or groups; lax's values to float32 rounding. Sharded over the
    batch under jit, vmappable, not differentiable by itself."""
    _check(x, w, strides, pads, kernel_out_in)
    return _conv_for(tuple(int(s) for s in strides),
                     tuple((int(lo), int(hi)) for lo, hi in pads), bool(kernel_out_in))(x, w)


# The check's tolerance by dtype: float32 rounding, or bfloat16's 8-bit
# significand (its operands are rounded to bfloat16 before either sums).
_CHECK_TOLERANCE = {"float32": 1e-5, "bfloat16": 3e-2}


@functools.cache
def available(dtype: str = "float32") -> bool:
    """Whether this jaxlib's CPU backend runs the oneDNN convolution in `dtype`
    ("float32" or "bfloat16"), with lax's values (checked once per process
    and dtype on a small strided 3D one). "bfloat16" only where the CPU
    computes it natively (`host.has_native_bf16`): elsewhere oneDNN
    emulates it, slower than float32."""
    if dtype not in _CHECK_TOLERANCE:
        raise ValueError(f"onednn.available: dtype {dtype!r} is not one of {sorted(_CHECK_TOLERANCE)}")
    if dtype == "bfloat16" and not host.has_native_bf16():
        return False
    # The first call usually comes while a model is being traced: without
    # compile-time evaluation the check's operations would be staged into
    # that trace instead of run.
    with jax.ensure_compile_time_eval():
        return _check_on_cpu(dtype)


def _check_on_cpu(dtype: str) -> bool:
    try:
        # This process's own device: in a multi-process run, computing on
        # another process's device would wait for that process forever.
        cpu = jax.local_devices(backend="cpu")[0]
    except RuntimeError:
        return False
    rng, dtype_ = np.random.default_rng(0), jax.numpy.dtype(dtype)
    x = jax.device_put(rng.standard_normal((2, 5, 9, 8, 3)).astype(dtype_), cpu)
    w = jax.device_put(rng.standard_normal((3, 3, 3, 3, 4)).astype(dtype_), cpu)
    strides, pads = (1, 2, 2), ((1, 1), (1, 1), (1, 0))
    try:
        ours = np.asarray(jax.jit(conv, static_argnums=(2, 3))(x, w, strides, pads), np.float32)
    except Exception as error:  # a jaxlib without the custom call: XLA's own convolutions
        _LOG.info("oneDNN %s convolutions unavailable (%s); XLA's own are used", dtype, error)
        return False
    # lax's in float32 on the same (rounded) operands: the sums oneDNN must give.
    reference = np.asarray(jax.jit(_lax_conv, static_argnames=("strides", "pads"))(
        x.astype(np.float32), w.astype(np.float32), strides=strides, pads=pads))
    tolerance = _CHECK_TOLERANCE[dtype]
    agree = ours.shape == reference.shape and np.allclose(
        ours, reference, rtol=tolerance, atol=tolerance * np.abs(reference).max())
    if not agree:
        _LOG.warning("oneDNN %s convolution disagrees with lax's on a check; XLA's own are used",
                     dtype)
    return bool(agree)
