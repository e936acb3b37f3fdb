"""XLA:CPU's fast forms of the reductions: the SAME max-pool, BatchNorm's
batch statistics, and the gradient's global norm.

Each computes what lax's does (the same values; gradients to float32
rounding, the max-pool's exactly) in an order XLA:CPU runs fast: its
reductions over the leading axes of a [positions, channels] array, its
select-and-scatter and its materialised squares are what they avoid.
"""
from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
from jax import lax

from i3d_jax.kernels.cpu.conv import same_padding

def max_pool_same(x, window: tuple[int, ...], strides: tuple[int, ...]):
    """TF SAME max-pool of x [N, *spatial, C] (padding counts as -inf), with the
    gradient lax gives it: the first maximum of each window in row-major
    order takes the window's gradient.

    Pooled one axis at a time, the last axis first, each a `_max_pool_box`:
    the maximum over a box is the maximum of the maxima along its axes,
    exactly, and the gradient of the chain goes, axis by axis from the
    first, to the first maximum along each, which is the box's first
    maximum in row-major order, ties included. XLA:CPU runs three 1D pools
    several times faster than one over a 3x3 window, and their gradients
    cheaper still (3 taps twice instead of 9, or 27 in a 3x3x3 window).
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

    XLA:CPU reduces the leading axes of a [positions, C] array an order of
    magnitude slower than the rows of a [frames, H x W x C] one, so the sum
    goes over frames first, then over the frame's positions (a small array).
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
    in another order, for 16 FLOPs an entry: a third of the time or less
    on a large tree.
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
