"""Channels-last SAME convolutions, 2D and 3D, in the forms XLA:CPU runs fast.

The same sums as `lax.conv_general_dilated` in another order (results agree
to float32 rounding); what differs is which XLA:CPU kernels compute them.
`conv_general_dilated(..., forward=, gradients=)` takes the forms that
`i3d_jax.kernels.cpu.cpu_kernels` fixed for the process:

- forward, FORWARD_FORMS: "onednn", oneDNN's direct convolution
  (`onednn.py`: about twice as fast as the other form), for
  float32 and, where the CPU has native bfloat16, bfloat16 convolutions;
  "stacked_taps", a 3D convolution as one 2D convolution over the temporal
  taps stacked on the channel axis (XLA:CPU's own 3D convolutions are
  several times slower than its 2D ones); a 1x1x1 convolution as one matrix
  product in both;
- gradients, GRADIENT_FORMS: "matrix_products" where XLA:CPU hands
  convolutions to YNNPACK (its default), the kernel gradient as one matrix
  product per group of taps (YNNPACK's transposed convolution for it is up
  to 2.6 times slower), the input gradient of a stride-1 convolution as the
  forward form on the output gradient with the kernel flipped; "lax" where
  XLA:CPU runs convolutions with its own Eigen kernels (XLA_FLAGS names the
  YNNPACK fusions it keeps, `i3d_jax.kernels.xla_flags`), the kernel gradient
  as lax's of the stacked-taps form with its operands laid out as Eigen
  reads them, the input gradient as lax's too unless the forward is
  oneDNN's (then the flipped-kernel one above). docs/benchmarks.md has the
  measured table behind the choice.

`jax.custom_vjp` holds the gradients; everything stays differentiable once
(train steps), not twice.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from i3d_jax.kernels.cpu import onednn

# A group of kernel taps whose matrix product has fewer input channels than
# this is widened by the taps along the width axis: matrix products this
# thin run far below the CPU's peak.
_NARROW_CHANNELS = 128
# Below this many entries (tap group's channels x output channels) a kernel
# gradient's matrix products are too thin to beat lax's (`_conv3d_same_backward`).
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
    ones that are not matrix products (those run as fast as one matrix
    product already), and bfloat16 ones where the CPU has bfloat16 arithmetic
    (`onednn.available("bfloat16")`, checked once as the kernels are chosen;
    XLA's own bfloat16 convolution is slower than its float32 one)."""
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
    """The stacked-taps forward form alone, differentiated by lax."""
    return _padded_conv(x, w, strides, _same_pads(x.shape[1:4], w.shape[:3], strides), precision)


# How `conv3d_same` computes its gradients and its values (see the module's docstring).
GRADIENT_FORMS = ("matrix_products", "lax")
FORWARD_FORMS = ("onednn", "stacked_taps")


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
        # oneDNN reads the kernel as [*taps, out, in]: no transposed copy, which
        # for the 3D-Fused net's 3x3x3x2048x512 kernel is a large part of a step.
        if w.size > dy.size + x.size:
            # Reversing the clip axes of the output gradient and of the result
            # instead of the kernel's taps (the same sums: a correlation with a
            # reversed kernel is the reversed correlation of the reversed input),
            # where those are smaller: the late layers' kernels dwarf their
            # activations (the 3D-ConvNet's conv5b).
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
    # positions] operand, the layout XLA:CPU's matrix product reads as it is;
    # stacked channels-last, every group's operand would be transposed again.
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
# operands of XLA's transposed convolution itself; below, the copy costs as
# much as it saves (docs/benchmarks.md, "The CPU kernels' thresholds").
_LAID_OUT_CHANNELS = 16
# A strided convolution's kernel gradient over fewer images (batch x output
# frames) than this is `_kernel_gradient`'s matrix products: Eigen's dilated
# transposed convolution is slow on few images and the faster on more.
_FEW_IMAGES = 4


def _lax_kernel_gradient(x, w, strides, pads, dy):
    """The kernel gradient for XLA:CPU's own (Eigen) convolutions: lax's of
    the stacked-taps form, as one 2D convolution of the taps stacked on the
    batch axis with the output gradient as its kernel, its operands laid out
    as Eigen reads them ([taps x channels, height, width, frames] and
    [height, width, frames, features]): one copy of the input, where lax's
    own transposes the stacked copy again (the same sums).
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
        # A 1x1x1 one: lax's transposed matrix product, which needs no copy.
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
    convolution runs a stride-1 one several times faster than a dilated one.
    Inputs of fewer than `_LAID_OUT_CHANNELS` channels do not gain and keep
    the other forms."""
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
        # is faster there (the main job's quarter-width I3D; I3D's first conv).
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
                         dimension_numbers=None, feature_group_count=1, precision=None, *,
                         forward: str, gradients: str, **kwargs):
    """`lax.conv_general_dilated`, channels-last SAME 2D and 3D convolutions
    through `conv3d_same` in the `forward` and `gradients` forms (a 2D one as
    a 3D one of one frame); anything else goes to lax unchanged."""
    plain = precision is None and is_plain_same_conv(
        lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
        kwargs)
    if not plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, precision=precision, **kwargs)
    if _forward_flops(lhs.shape, rhs.shape, window_strides) < ONEDNN_MIN_FLOPS:
        forward = "stacked_taps"
    return same_conv(lhs, rhs, tuple(window_strides), gradients, forward)


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
