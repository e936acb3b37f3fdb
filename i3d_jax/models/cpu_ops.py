"""Channels-last SAME convolutions, 2D and 3D, in the forms XLA:CPU runs fast.

The same sums as `lax.conv_general_dilated` in another order (results agree
to float32 rounding); what differs is which XLA:CPU kernels compute them:

- forward, in the form `forward_form()` picks: oneDNN's direct convolution
  ("onednn", `onednn.py`: 2-2.5 times faster than the other form on a Xeon)
  where this jaxlib runs it, for float32 and, where the CPU has native
  bfloat16 (`cpu_features`), bfloat16 convolutions, else ("stacked_taps") a 3D convolution as one
  2D convolution over the temporal taps stacked on the channel axis
  (XLA:CPU's own 3D convolutions are several times slower than its 2D ones);
  a 1x1x1 convolution as one matrix product in both;
- gradients, in the form `gradient_form()` picks for the CPU and XLA's
  flags: where XLA:CPU hands convolutions to YNNPACK (its default) on a CPU
  without AMX ("matrix_products"), the kernel gradient as one matrix product
  per group of taps (where those are not too thin: else lax's), contracting
  the shifted input with the output gradient over batch, time and space
  (YNNPACK's transposed convolution for it is up to 2.6 times slower), and
  the input gradient of a stride-1 convolution as the forward form above on
  the output gradient with the kernel flipped; on Xeons with AMX, or where
  XLA:CPU runs convolutions itself ("lax"), the kernel gradient as lax's of
  the stacked-taps form, which runs 1.2-2 times faster there than those
  products, and the input gradient as lax's too unless the forward is
  oneDNN's (then the flipped-kernel one above);
- BatchNorm's batch statistics and their gradient: sums over rows as wide
  as a frame (`channel_sum`), with a hand-written VJP (`batch_norm`).

`jax.custom_vjp` holds the gradients; everything stays differentiable once
(train steps), not twice. GPUs and TPUs keep lax's native convolution: the
choice is `conv_impl` in `layers.py`.
"""
from __future__ import annotations

import functools
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from i3d_jax.models import cpu_features, onednn

# A group of kernel taps whose matrix product has fewer input channels than
# this is widened by the taps along the width axis: matrix products this
# thin run far below the CPU's peak (measured on I3D's layers).
_NARROW_CHANNELS = 128
# Below this many entries (tap group's channels x output channels) a kernel
# gradient's matrix products are too thin to beat lax's (measured, see
# `_conv3d_same_backward`).
_SMALL_PRODUCT = 2048


def _taps_per_group(width: int, channels: int) -> int:
    """How many taps along the width axis one of `_kernel_gradient`'s products stacks."""
    return width if channels < _NARROW_CHANNELS else 1


def _product_width(kernel_shape) -> int:
    """Entries of one of `_kernel_gradient`'s matrix products."""
    width, channels, features = kernel_shape[2:]
    return _taps_per_group(width, channels) * channels * features


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF SAME: ceil(size / stride) outputs, the odd padded pixel at the end."""
    outputs = -(-size // stride)
    total = max((outputs - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _is_matrix_product(kernel_shape, strides, pads) -> bool:
    """A 1x1x1 convolution without stride or padding: one matrix product."""
    return tuple(kernel_shape[:3]) == (1, 1, 1) and tuple(strides) == (1, 1, 1) and not any(
        lo or hi for lo, hi in pads)


def _padded_conv(x, w, strides, pads, precision=None):
    """x [N, T, H, W, C] * w [kt, kh, kw, C, F] with explicit `pads` ((lo, hi) per
    axis), in XLA:CPU's fast forms (no custom gradient)."""
    taps, height, width, channels, features = w.shape
    if _is_matrix_product(w.shape, strides, pads):
        return lax.dot_general(x, w.reshape(channels, features), (((4,), (0,)), ((), ())),
                               precision=precision)
    stride = strides[0]
    x = jnp.pad(x, ((0, 0), pads[0], (0, 0), (0, 0), (0, 0)))
    out_frames = (x.shape[1] - taps) // stride + 1
    if taps == 1:
        stacked = lax.slice_in_dim(x, 0, (out_frames - 1) * stride + 1, stride, axis=1)
    else:
        stacked = jnp.concatenate(
            [lax.slice_in_dim(x, t, t + (out_frames - 1) * stride + 1, stride, axis=1)
             for t in range(taps)], axis=-1)
    batch = stacked.shape[0]
    stacked = stacked.reshape(batch * out_frames, *stacked.shape[2:])
    kernel = jnp.transpose(w, (1, 2, 0, 3, 4)).reshape(height, width, taps * channels, features)
    out = lax.conv_general_dilated(
        stacked, kernel, tuple(strides[1:]), tuple(pads[1:]),
        dimension_numbers=onednn.CHANNELS_LAST[2], precision=precision)
    return out.reshape(batch, out_frames, *out.shape[1:])


def _takes_onednn(x, w, strides, pads, forward: str) -> bool:
    """Whether `forward` "onednn" runs this convolution on oneDNN: float32
    ones that are not matrix products (those are level: 2.4 against 2.4 ms
    for I3D's `Conv3d_2b_1x1`), and bfloat16 ones where the CPU has bfloat16
    arithmetic (`onednn.available("bfloat16")`: I3D's `Conv3d_2c_3x3` at
    32x56x56 on an AVX-512 EPYC, 163 ms against 314 in float32 and 693 in
    XLA's own bfloat16 convolution)."""
    if forward != "onednn" or _is_matrix_product(w.shape, strides, pads) or x.dtype != w.dtype:
        return False
    return x.dtype == jnp.float32 or (x.dtype == jnp.bfloat16 and onednn.available("bfloat16"))


def _forward_conv(x, w, strides, pads, forward: str):
    """`_padded_conv`, or oneDNN's convolution where `_takes_onednn`."""
    if _takes_onednn(x, w, strides, pads, forward):
        return onednn.conv(x, w, strides, pads)
    return _padded_conv(x, w, strides, pads)


def _same_pads(shape, kernel, strides):
    return tuple(same_padding(size, k, s) for size, k, s in zip(shape, kernel, strides))


def stacked_taps_conv(x, w, strides, precision=None):
    """The forward form alone, differentiated by lax (`conv_impl="stacked_taps"`)."""
    return _padded_conv(x, w, strides, _same_pads(x.shape[1:4], w.shape[:3], strides), precision)


# How `conv3d_same` computes its gradients and its values (see the module's docstring).
GRADIENT_FORMS = ("matrix_products", "lax")
FORWARD_FORMS = ("onednn", "stacked_taps")


def forward_form() -> str:
    """"onednn" where this jaxlib runs oneDNN's convolution with lax's values
    (`onednn.available()`), else "stacked_taps"."""
    return "onednn" if onednn.available() else "stacked_taps"


# XLA's flag that lists the library fusions XLA:CPU hands to YNNPACK.
YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def ynnpack_runs_convolutions(xla_flags: str | None = None) -> bool:
    """Whether XLA:CPU hands convolutions to YNNPACK, as it does by default
    (jaxlib 0.10.2), rather than running them with its own Eigen kernels, as
    it does once `XLA_FLAGS` (or `xla_flags`) sets YNN_FUSION_FLAG to a list
    of its own (e.g. "dot"; "+dot" or "-dot" edit the default list and keep
    the convolutions YNNPACK's).

    XLA reads XLA_FLAGS once, when its CPU client starts: this reads the
    same variable, so it holds as long as nobody changes it after that.
    """
    if xla_flags is None:
        xla_flags = os.environ.get("XLA_FLAGS", "")
    values = None
    for flag in xla_flags.split():
        name, _, value = flag.partition("=")
        if name == YNN_FUSION_FLAG:
            values = value.strip("'\"")  # the last one wins, as in XLA
    if values is None:
        return True
    types = [v for v in values.split(",") if v]
    if any(t[0] in "+-" for t in types):
        return True
    return any("conv" in t for t in types)


@functools.cache
def gradient_form() -> str:
    """The gradient form that is faster here: "lax" where the CPU has AMX
    (Intel's Sapphire Rapids and later) or where XLA:CPU runs convolutions
    with its own kernels (`ynnpack_runs_convolutions()` false), else
    "matrix_products".

    Measured on 2-core VMs. Xeon with AMX, I3D RGB train step on a
    64x224x224 clip: 5.58 s with the matrix products, 3.30 s with lax's
    gradients (Conv3d_2c_3x3's kernel gradient 0.92 vs 0.36 s). EPYC (Zen 4,
    AVX-512, 2026-12-03), train steps with XLA_FLAGS=YNN_FUSION_FLAG=dot:
    I3D 1x64x224x224 5.54 -> 4.65 s with lax's gradients, the 3D-ConvNet
    2x16x112x112 2.12 -> 1.72 s, the main job's 0.250 -> 0.223 s
    (Conv3d_2c_3x3's kernel gradient 849 vs 431 ms: Eigen's transposed
    convolution of the stacked taps reads the shifted input in place, the
    matrix products copy it once per tap group); by default, where YNNPACK
    takes the convolutions, I3D's step takes 8.76 s with the matrix products
    and 11.35 s with lax's (that kernel gradient 0.90 against 2.36 s).
    Both forms compute the same sums (`tests/test_cpu_ops.py` checks each
    against lax).
    """
    if "amx_tile" in cpu_features.cpu_flags():
        return "lax"
    return "matrix_products" if ynnpack_runs_convolutions() else "lax"


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv3d_same(x, w, strides, gradients: str, forward: str = "stacked_taps"):
    """TF SAME convolution of x [N, T, H, W, C] with w [kt, kh, kw, C, F];
    `gradients` one of GRADIENT_FORMS, `forward` one of FORWARD_FORMS."""
    return _forward_conv(x, w, strides, _same_pads(x.shape[1:4], w.shape[:3], strides), forward)


def _conv3d_same_forward(x, w, strides, gradients, forward):
    return conv3d_same(x, w, strides, gradients, forward), (x, w)


def _input_gradient(x, w, strides, pads, dy, forward):
    if any(s != 1 for s in strides):
        # Only the first layers are strided, and their input is the clip,
        # whose gradient a train step never asks for: lax's transpose.
        return jax.vjp(lambda x: _padded_conv(x, w, strides, pads), x)[1](dy)[0]
    transposed_pads = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(w.shape[:3], pads))
    if _takes_onednn(dy, w, strides, transposed_pads, forward):
        # oneDNN reads the kernel as [*taps, out, in]: no transposed copy (the
        # 3D-Fused net's 3x3x3x2048x512 one took 213 ms of a 1.6 s step).
        if w.size > dy.size + x.size:
            # Reversing the clip axes of the output gradient and of the result
            # instead of the kernel's taps (the same sums: a correlation with a
            # reversed kernel is the reversed correlation of the reversed input),
            # where those are smaller: the late layers' kernels dwarf their
            # activations (the 3D-ConvNet's conv5b: 7.1M entries against 50K).
            spatial = (1, 2, 3)
            swapped_pads = tuple((hi, lo) for lo, hi in transposed_pads)
            out = onednn.conv(jnp.flip(dy, spatial), w, strides, swapped_pads, kernel_out_in=True)
            return jnp.flip(out, spatial).astype(x.dtype)
        return onednn.conv(dy, jnp.flip(w, axis=(0, 1, 2)), strides, transposed_pads,
                           kernel_out_in=True).astype(x.dtype)
    flipped = jnp.swapaxes(jnp.flip(w, axis=(0, 1, 2)), 3, 4)
    return _padded_conv(dy, flipped, strides, transposed_pads).astype(x.dtype)


def _kernel_gradient(x, w, strides, pads, dy):
    """dw[a, b, c] = sum over (n, t, h, w) of x_pad[n, t s + a, h s + b, w s + c] dy[n, t, h, w]."""
    taps, height, width, channels, features = w.shape
    # Channels first: each tap group stacks into a [taps x channels,
    # positions] operand, the layout XLA:CPU's matrix product reads as it is.
    # Stacked channels-last, every group's operand was transposed again
    # (0.57 of 3.1 thread-seconds in a 1x64x224x224 I3D step; 0.07 now).
    x = jnp.transpose(jnp.pad(x, ((0, 0), *pads, (0, 0))), (4, 0, 1, 2, 3))
    out_shape = dy.shape[1:4]

    def shifted(offsets):
        start = (0, 0, *offsets)
        limit = (channels, x.shape[1],
                 *(o + (n - 1) * s + 1 for o, n, s in zip(offsets, out_shape, strides)))
        return lax.slice(x, start, limit, (1, 1, *strides))

    group = _taps_per_group(width, channels)
    accumulate = jnp.promote_types(x.dtype, jnp.float32)  # bf16 sums in float32
    contract = (((1, 2, 3, 4), (0, 1, 2, 3)), ((), ()))
    rows = []
    for a in range(taps):
        for b in range(height):
            for c0 in range(0, width, group):
                columns = [shifted((a, b, c)) for c in range(c0, c0 + group)]
                lhs = columns[0] if group == 1 else jnp.concatenate(columns, axis=0)
                product = lax.dot_general(lhs, dy, contract, preferred_element_type=accumulate)
                rows.append(product.reshape(group, channels, features))
    return jnp.concatenate(rows).reshape(w.shape).astype(w.dtype)


# From this many input channels on, `_lax_kernel_gradient` builds the
# operands of XLA's transposed convolution itself (below, level or slower:
# the 3D-ConvNet's conv1a, 3 channels, 88 against 95 ms; from 16 on faster:
# Inception-v1's Mixed_3c 3x3 of 32 channels on one image 0.9 -> 0.4 ms).
_LAID_OUT_CHANNELS = 16
# A strided convolution's kernel gradient over fewer images (batch x output
# frames) than this is `_kernel_gradient`'s matrix products: Eigen's dilated
# transposed convolution is slow there (Inception-v1's Conv2d_1a_7x7 on one
# 224x224 flow stack 85.7 against 37.8 ms, on one RGB frame 15.7 against 3.9;
# on 5 it is the faster, 124 against 238 ms).
_FEW_IMAGES = 4


def _lax_kernel_gradient(x, w, strides, pads, dy):
    """The kernel gradient for XLA:CPU's own (Eigen) convolutions: lax's of
    the stacked-taps form, as one 2D convolution of the taps stacked on the
    batch axis with the output gradient as its kernel, its operands laid out
    as Eigen reads them ([taps x channels, height, width, frames] and
    [height, width, frames, features]): one copy of the input, where lax's
    own transposes the stacked copy again (2-core EPYC: Mixed_3b's 3x3x3
    154 -> 128 ms, the 3D-ConvNet's conv4b 85 -> 59 ms; the same sums).
    Spatially strided ones of `_LAID_OUT_CHANNELS` or more channels become
    stride-1 ones (`_polyphase_kernel_gradient`); thin, 1x1x1 and other
    few-image strided ones take the forms named below."""
    taps, height, width, channels, features = w.shape
    batch, frames = dy.shape[:2]
    images = batch * frames
    if any(s != 1 for s in strides[1:]) and channels >= _LAID_OUT_CHANNELS:
        return _polyphase_kernel_gradient(x, w, strides, pads, dy)
    if any(s != 1 for s in strides) and images < _FEW_IMAGES:
        return _kernel_gradient(x, w, strides, pads, dy)
    if channels < _LAID_OUT_CHANNELS or _is_matrix_product(w.shape, strides, pads):
        # A 1x1x1 one: lax's transposed matrix product (I3D's Conv3d_2b_1x1
        # 24 ms, laid out as below 31 ms).
        return jax.vjp(lambda w: _padded_conv(x, w, strides, pads), w)[1](dy)[0]
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))

    def tap(a):  # [channels, height, width, images]: the frames tap `a` reads
        frames_read = lax.slice_in_dim(x, a, a + (frames - 1) * strides[0] + 1, strides[0], axis=1)
        return jnp.transpose(frames_read.reshape(images, *x.shape[2:]), (3, 1, 2, 0))

    lhs = jnp.concatenate([tap(a) for a in range(taps)])
    rhs = jnp.transpose(dy.reshape(images, *dy.shape[2:]), (1, 2, 0, 3))
    out = lax.conv_general_dilated(lhs, rhs, (1, 1), ((0, 0), (0, 0)), rhs_dilation=strides[1:],
                                   dimension_numbers=onednn.CHANNELS_LAST[2])
    # [taps x channels, height, width, features] -> [taps, height, width, channels, features]
    return jnp.transpose(out.reshape(taps, channels, height, width, features), (0, 2, 3, 1, 4))


def _polyphase_kernel_gradient(x, w, strides, pads, dy):
    """`_lax_kernel_gradient` of a spatially strided convolution as that of a
    stride-1 one: each axis of stride s split into its s phases (pixel i
    goes to phase i mod s, position i // s), the phases stacked on the
    channel axis, the kernel's taps likewise (tap b reads phase b mod s at
    offset b // s), the kernel padded with zero taps to a multiple of s. The
    same sums (the padding taps' gradients are dropped); Eigen's transposed
    convolution runs a stride-1 one several times faster than a dilated one
    (2-core EPYC, Inception-v1's Conv2d_1a_7x7 on a 224x224 stack of 20 flow
    channels: one image 45.8 -> 13.6 ms, five 149 -> 83 ms). Inputs of fewer
    than `_LAID_OUT_CHANNELS` channels do not gain (three RGB channels on 25
    frames: 112 -> 119 ms) and keep the other forms."""
    taps, height, width, channels, features = w.shape
    (_, step_h, step_w), out_h, out_w = strides, *dy.shape[2:4]
    phase_h, phase_w = -(-height // step_h), -(-width // step_w)  # taps per phase
    # SAME's pads, then zeros up to whole phases of (out + phase taps - 1) pixels: at
    # least what the strided kernel reads, so never a crop.
    size_h, size_w = (out_h + phase_h - 1) * step_h, (out_w + phase_w - 1) * step_w
    x = jnp.pad(x, ((0, 0), (0, 0),
                    (pads[1][0], size_h - x.shape[2] - pads[1][0]),
                    (pads[2][0], size_w - x.shape[3] - pads[2][0]), (0, 0)))
    batch, frames = x.shape[:2]
    phased = x.reshape(batch, frames, size_h // step_h, step_h, size_w // step_w, step_w, channels)
    phased = jnp.transpose(phased, (0, 1, 2, 4, 3, 5, 6)).reshape(
        batch, frames, size_h // step_h, size_w // step_w, step_h * step_w * channels)
    phased_kernel = jnp.zeros((taps, phase_h, phase_w, step_h * step_w * channels, features),
                              w.dtype)  # its shape only: the gradient does not read it
    dw = _lax_kernel_gradient(phased, phased_kernel, (strides[0], 1, 1),
                              (pads[0], (0, 0), (0, 0)), dy)
    dw = dw.reshape(taps, phase_h, phase_w, step_h, step_w, channels, features)
    dw = jnp.transpose(dw, (0, 1, 3, 2, 4, 5, 6)).reshape(
        taps, phase_h * step_h, phase_w * step_w, channels, features)
    return dw[:, :height, :width]


def _conv3d_same_backward(strides, gradients, forward, residuals, dy):
    x, w = residuals
    pads = _same_pads(x.shape[1:4], w.shape[:3], strides)
    if gradients == "lax":
        # The stacked input is rebuilt here rather than kept from the forward.
        if forward == "stacked_taps":
            return jax.vjp(lambda x, w: _padded_conv(x, w, strides, pads), x, w)[1](dy)
        dw = _lax_kernel_gradient(x, w, strides, pads, dy)
    elif _product_width(w.shape) < _SMALL_PRODUCT:
        # Thin products re-read the output gradient once per tap group for
        # little arithmetic: lax's transposed convolution of the stacked form
        # is faster there (the quarter-width I3D of the main job: 297 -> 229
        # ms a step; I3D's first conv at full width too).
        dw = jax.vjp(lambda w: _padded_conv(x, w, strides, pads), w)[1](dy)[0]
    else:
        dw = _kernel_gradient(x, w, strides, pads, dy)
    return _input_gradient(x, w, strides, pads, dy, forward), dw


conv3d_same.defvjp(_conv3d_same_forward, _conv3d_same_backward)

_CHANNELS_LAST = {rank: onednn.CHANNELS_LAST[rank] for rank in (2, 3)}  # the ranks rewritten


def is_plain_same_conv(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                       feature_group_count, kwargs) -> bool:
    """Whether a `conv_general_dilated` call is a channels-last SAME convolution
    without dilation or groups: the calls the CPU forms rewrite."""
    return (
        lhs.ndim - 2 in _CHANNELS_LAST
        and padding == "SAME"
        and not any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
        and feature_group_count == 1
        and not kwargs
        and dimension_numbers == lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                                            _CHANNELS_LAST[lhs.ndim - 2]))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None,
                         **kwargs):
    """`lax.conv_general_dilated`, channels-last SAME 2D and 3D convolutions
    through `conv3d_same` (a 2D one as a 3D one of one frame); anything else
    goes to lax unchanged."""
    rank = lhs.ndim - 2
    plain = precision is None and is_plain_same_conv(
        lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
        kwargs)
    if not plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, precision=precision, **kwargs)
    forward = forward_form() if _forward_flops(lhs.shape, rhs.shape, window_strides) >= \
        ONEDNN_MIN_FLOPS else "stacked_taps"
    return same_conv(lhs, rhs, tuple(window_strides), gradient_form(), forward)


# Convolutions below this many FLOPs keep XLA's own form: oneDNN gains them
# well under a millisecond, and an executable holding its custom call cannot
# be serialized, so a program of small ones only (a test's tiny model) stays
# cacheable by JAX's persistent compilation cache.
ONEDNN_MIN_FLOPS = 1e8


def _forward_flops(x_shape, w_shape, strides) -> float:
    outputs = np.prod([-(-size // s) for size, s in zip(x_shape[1:-1], strides)])
    return 2.0 * x_shape[0] * outputs * np.prod(w_shape)


def same_conv(x, w, strides, gradients: str, forward: str = "stacked_taps"):
    """`conv3d_same` of a 2D or 3D channels-last input (a 2D one as one frame)."""
    if gradients not in GRADIENT_FORMS:
        raise ValueError(f"gradients {gradients!r} is not one of {GRADIENT_FORMS}")
    if forward not in FORWARD_FORMS:
        raise ValueError(f"forward {forward!r} is not one of {FORWARD_FORMS}")
    if x.ndim == 4:
        return conv3d_same(x[:, None], w[None], (1, *strides), gradients, forward)[:, 0]
    return conv3d_same(x, w, tuple(strides), gradients, forward)


def max_pool_same(x, window: tuple[int, ...], strides: tuple[int, ...]):
    """TF SAME max-pool of x [N, *spatial, C] (padding counts as -inf), with the
    gradient lax gives it: the first maximum of each window in row-major
    order takes the window's gradient.

    Pooled one axis at a time, the last axis first, each a `_max_pool_box`:
    the maximum over a box is the maximum of the maxima along its axes,
    exactly, and the gradient of the chain goes, axis by axis from the
    first, to the first maximum along each, which is the box's first
    maximum in row-major order, ties included. XLA:CPU runs three 1D pools
    2-6 times faster than one over a 3x3 window (I3D inference on a
    64x224x224 clip: 0.745 -> 0.700 s), and the gradients cheaper still
    (3 taps twice instead of 9, or 27 in a 3x3x3 window).
    """
    for axis in reversed(range(len(window))):
        if (window[axis], strides[axis]) == (1, 1):
            continue
        axis_window, axis_strides = [1] * len(window), [1] * len(window)
        axis_window[axis], axis_strides[axis] = window[axis], strides[axis]
        x = _max_pool_box(x, tuple(axis_window), tuple(axis_strides))
    return x


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool_box(x, window: tuple[int, ...], strides: tuple[int, ...]):
    """One SAME max-pool over a whole window, its gradient as masked shifted
    sums: XLA:CPU's select-and-scatter and the index bookkeeping of lax's
    reduce-window gradient cost 5-10 times the pool itself."""
    pads = ((0, 0), *(same_padding(n, k, s) for n, k, s in zip(x.shape[1:-1], window, strides)),
            (0, 0))
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), pads)


def _max_pool_forward(x, window, strides):
    return _max_pool_box(x, window, strides), (x, None)


def _max_pool_backward(window, strides, residuals, dy):
    x, _ = residuals
    pads = [same_padding(n, k, s) for n, k, s in zip(x.shape[1:-1], window, strides)]
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
    out_shape = dy.shape[1:-1]
    offsets = list(itertools.product(*(range(k) for k in window)))
    limits = [tuple(o + (n - 1) * s + 1 for o, n, s in zip(offset, out_shape, strides))
              for offset in offsets]
    taps = [lax.slice(padded, (0, *offset, 0), (x.shape[0], *limit, x.shape[-1]),
                      (1, *strides, 1)) for offset, limit in zip(offsets, limits)]
    # Which tap holds each window's first maximum, by comparing the taps with
    # each other (a strict > keeps the earliest): never by equality with the
    # forward's output, which XLA may have computed from a recomputed input.
    best, first = taps[0], jnp.zeros(dy.shape, jnp.int32)
    for index, tap in enumerate(taps[1:], start=1):
        better = tap > best
        best = jnp.where(better, tap, best)
        first = jnp.where(better, index, first)
    dx = jnp.zeros(padded.shape, dy.dtype)
    for index, (offset, limit) in enumerate(zip(offsets, limits)):
        # The tap's share back at its input positions: interior padding spreads
        # a strided window's outputs, edge padding shifts them into place.
        placed = lax.pad(jnp.where(first == index, dy, 0).astype(dy.dtype),
                         jnp.zeros((), dy.dtype),
                         ((0, 0, 0),
                          *((o, size - l, s - 1) for o, l, size, s in
                            zip(offset, limit, padded.shape[1:-1], strides)),
                          (0, 0, 0)))
        dx = dx + placed
    inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, x.shape[1:-1]))
    return (dx[(slice(None), *inner, slice(None))],)


_max_pool_box.defvjp(_max_pool_forward, _max_pool_backward)


def channel_sum(x):
    """The sum of x [..., C] over every axis but the last, in float32 or wider.

    XLA:CPU reduces the leading axes of a [positions, C] array 30 times slower
    than the rows of a [frames, H x W x C] one (a [1, 32, 112, 112, 64]
    activation: 103 vs 3.3 ms on 2 cores), so the sum goes over frames
    first, then over the frame's positions (a small array).
    """
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if x.ndim < 4:
        return jnp.sum(x.reshape(-1, x.shape[-1]), axis=0)
    frame = x.shape[-3:]
    per_frame = jnp.sum(x.reshape(-1, frame[0] * frame[1] * frame[2]), axis=0)
    # A matrix product, not a second sum: XLA would merge two sums back into
    # the slow one.
    return lax.dot_general(jnp.ones(frame[0] * frame[1], per_frame.dtype),
                           per_frame.reshape(-1, frame[2]), (((0,), (0,)), ((), ())),
                           precision=lax.Precision.HIGHEST)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm(x, scale, bias, epsilon: float):
    """BatchNorm of x [..., C] on its batch statistics, as flax's nn.BatchNorm
    computes it: returns (y, mean, var), var the biased E[x^2] - E[x]^2 (at
    least 0), y = (x - mean) / sqrt(var + epsilon) * scale + bias in float32
    (the caller casts it).

    Its VJP is the closed form: two channel sums of the output gradient,
    each as `channel_sum` does it; autodiff of the forward gives XLA the
    slow reductions of the backward.
    """
    return _batch_norm_forward(x, scale, bias, epsilon)[0]


def _batch_norm_statistics(x):
    count = x.size // x.shape[-1]
    mean = channel_sum(x) / count
    mean_square = channel_sum(jnp.square(x.astype(mean.dtype))) / count
    return mean, jnp.maximum(0.0, mean_square - jnp.square(mean))


def _batch_norm_forward(x, scale, bias, epsilon):
    mean, var = _batch_norm_statistics(x)
    inverse = lax.rsqrt(var + epsilon)
    y = (x - mean) * (inverse * scale) + bias
    return (y, mean, var), (x, mean, inverse, scale, bias)


def _batch_norm_backward(epsilon, residuals, cotangents):
    x, mean, inverse, scale, bias = residuals
    dy, dmean, dvar = cotangents
    count = x.size // x.shape[-1]
    dy = dy.astype(mean.dtype)
    centred = x - mean
    dbias = channel_sum(dy)
    dscale = channel_sum(dy * (centred * inverse))
    # d(loss)/dx through the normalised values, then through the returned
    # statistics (zero in a train step: they only update running averages).
    dx = (scale * inverse) * (dy - dbias / count - centred * inverse * (dscale / count))
    dx = dx + dmean / count + centred * (2 * dvar / count)
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


batch_norm.defvjp(_batch_norm_forward, _batch_norm_backward)


# Leaves of fewer entries are summed as they are (the matrix product gains nothing).
_GRAM_MIN_SIZE = 4096
_GRAM_WIDTH = 8


def sum_of_squares(x):
    """sum(x ** 2) in float32 or wider, as the trace of a [8, 8] matrix product
    (x as [n / 8, 8], contracted over its rows) where x has at least
    _GRAM_MIN_SIZE entries and a multiple of 8.

    XLA:CPU computes jnp.sum(jnp.square(x)) as a materialised square and a
    tree of reduce-windows; the product reads x once, in place. The same sum
    in another order, for 16 FLOPs an entry. A tree of 31M float32 entries
    (2-core EPYC): 66 -> 21 ms without huge pages, 44 -> 18 ms with them.
    """
    x = x.reshape(-1).astype(jnp.promote_types(x.dtype, jnp.float32))
    if x.size < _GRAM_MIN_SIZE or x.size % _GRAM_WIDTH:
        return jnp.sum(jnp.square(x))
    rows = x.reshape(-1, _GRAM_WIDTH)
    gram = lax.dot_general(rows, rows, (((0,), (0,)), ((), ())), precision=lax.Precision.HIGHEST)
    return jnp.trace(gram)


def global_norm(tree):
    """optax.global_norm of `tree`'s leaves, their squares summed by `sum_of_squares`."""
    return jnp.sqrt(sum(sum_of_squares(leaf) for leaf in jax.tree.leaves(tree)))
