"""TV-L1 optical flow in JAX, batched over frame pairs and jit-compiled.

The algorithm is the dual TV-L1 scheme of Zach, Pock and Bischof (2007) as
described by Sanchez, Meinhardt-Llopis and Facciolo ("TV-L1 Optical Flow
Estimation", IPOL 2013), with the choices OpenCV's `DualTVL1OpticalFlow`
makes, so that flow computed here can stand in for the flow most I3D
checkpoints were trained on:

- images in 0..255 (uint8 as it is; float frames are taken in [0, 1] and
  scaled by 255, as OpenCV does);
- a pyramid of `scales` levels, each a bilinear resize of the one above by
  `scale_step` (OpenCV's `resize(..., INTER_LINEAR)`, no presmoothing), and
  no level smaller than 16 pixels on a side;
- coarse to fine: the flow of a level is resized to the next finer one and
  multiplied by 1 / scale_step;
- `warps` warpings a level: the second image and its centred gradient are
  sampled at x + u with bicubic interpolation (Keys, a = -0.75, positions
  quantised to 1/32 pixel, zero outside the image: `remap(..., INTER_CUBIC)`);
- per warping, up to `outer_iterations` rounds, each starting with a
  `median_filtering` x `median_filtering` median filter of the flow (border
  replicated), then up to `inner_iterations` primal-dual steps; both loops
  stop once the squared change of the flow summed over the level is at most
  epsilon^2 times its pixel count.

Departures: OpenCV's illumination term (`gamma`, 0 by default) and an
initial flow are not offered.

Every stage is a pure function of arrays; `tvl1_pairs` vmaps the solver over
a batch of pairs (a per-pair stopping test becomes a masked update under
vmap) so an accelerator can be filled with many pairs at once.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import jax
import jax.numpy as jnp
import numpy as np

# Flow storage convention of the I3D flow stream: pixels truncated to
# +-FLOW_BOUND, which the network sees as [-1, 1].
FLOW_BOUND = 20.0

# OpenCV's cvtColor RGB2GRAY for uint8: 0.299, 0.587, 0.114 in 16-bit fixed
# point, rounded so the weights sum to 1 (checked on all 2^24 colours).
_GRAY_WEIGHTS_FIXED = (19596, 38470, 7470)
_GRAY_SHIFT = 16
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)

# Coarsest pyramid level OpenCV allows (pixels on the shorter side).
_MIN_LEVEL_SIDE = 16
# remap samples at positions rounded to 1/32 pixel (OpenCV's INTER_TAB_SIZE).
_REMAP_SUBPIXELS = 32
# Keys' cubic convolution parameter used by OpenCV's INTER_CUBIC.
_CUBIC_A = -0.75
_FLOAT32_EPS = float(np.finfo(np.float32).eps)


@dataclasses.dataclass(frozen=True)
class TVL1Params:
    """Parameters of TV-L1; the defaults are OpenCV's DualTVL1 defaults.

    Hashable, so it is a static argument of the jitted `tvl1_pairs`.
    """

    tau: float = 0.25  # time step of the dual update (stable for tau <= 0.25)
    lambda_: float = 0.15  # weight of the data term: smaller is smoother
    theta: float = 0.3  # coupling between the flow and its auxiliary variable
    scales: int = 5  # pyramid levels
    warps: int = 5  # warpings per level
    epsilon: float = 0.01  # stopping threshold (per-pixel flow change)
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8  # size ratio between pyramid levels
    median_filtering: int = 5  # median filter size; 1 turns it off

    def __post_init__(self):
        for name in ("tau", "lambda_", "theta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TVL1Params.{name} must be > 0, got {getattr(self, name)}")
        for name in ("scales", "warps", "inner_iterations", "outer_iterations"):
            value = getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and value >= 1):
                raise ValueError(f"TVL1Params.{name} must be an integer >= 1, got {value!r}")
        if not self.epsilon >= 0:
            raise ValueError(f"TVL1Params.epsilon must be >= 0, got {self.epsilon}")
        if not 0 < self.scale_step < 1:
            raise ValueError(f"TVL1Params.scale_step must be in (0, 1), got {self.scale_step}")
        if self.median_filtering < 1 or (self.median_filtering > 1 and self.median_filtering % 2 == 0):
            raise ValueError(
                f"TVL1Params.median_filtering must be 1 (off) or an odd size, got {self.median_filtering}"
            )


# ---------------------------------------------------------------------------
# Host-side preparation


def to_gray(frames) -> np.ndarray:
    """Frames [T, H, W] or [T, H, W, 3] (RGB) -> float32 gray [T, H, W] in 0..255.

    uint8 RGB is converted exactly as OpenCV's cvtColor(RGB2GRAY) does (then
    used as 0..255); float frames are taken in [0, 1], as OpenCV takes them.
    """
    frames = np.asarray(frames)
    if frames.ndim == 4 and frames.shape[-1] == 1:
        frames = frames[..., 0]
    if frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
        raise ValueError(f"expected frames [T, H, W] or [T, H, W, 3], got shape {frames.shape}")
    if frames.dtype == np.uint8:
        if frames.ndim == 3:
            return frames.astype(np.float32)
        r, g, b = (frames[..., i].astype(np.int32) for i in range(3))
        wr, wg, wb = _GRAY_WEIGHTS_FIXED
        gray = (r * wr + g * wg + b * wb + (1 << (_GRAY_SHIFT - 1))) >> _GRAY_SHIFT
        return gray.astype(np.float32)
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"expected uint8 or float frames, got dtype {frames.dtype}")
    frames = frames.astype(np.float32)
    if frames.ndim == 4:
        wr, wg, wb = _GRAY_WEIGHTS
        frames = frames[..., 0] * wr + frames[..., 1] * wg + frames[..., 2] * wb
    return frames * 255.0


def pyramid_shapes(height: int, width: int, params: TVL1Params) -> list[tuple[int, int]]:
    """(height, width) of each pyramid level, finest first, as OpenCV sizes them."""
    shapes = [(height, width)]
    for _ in range(1, params.scales):
        h, w = shapes[-1]
        # cv::resize rounds the scaled size half to even, like Python's round.
        h, w = round(h * params.scale_step), round(w * params.scale_step)
        if h < _MIN_LEVEL_SIDE or w < _MIN_LEVEL_SIDE:
            break
        shapes.append((h, w))
    return shapes


# ---------------------------------------------------------------------------
# Image operations on one [H, W] array (vmapped by the caller)


def _linear_taps(src_len: int, dst_len: int, scale: float):
    """Source indices and weights of OpenCV's INTER_LINEAR along one axis.

    Output pixel d samples source position (d + 0.5) * scale - 0.5, clamped
    to the first and last pixel.
    """
    position = ((np.arange(dst_len) + 0.5) * scale - 0.5).astype(np.float32)
    low = np.floor(position).astype(np.int32)
    frac = position - low
    before = low < 0
    frac[before], low[before] = 0.0, 0
    after = low >= src_len - 1
    frac[after], low[after] = 0.0, src_len - 1
    high = np.minimum(low + 1, src_len - 1)
    return low, high, frac.astype(np.float32)


def _resize_linear(image, shape, scale_y: float, scale_x: float):
    """Bilinear resize of image [..., H, W] to `shape`: rows first, then columns."""
    height, width = image.shape[-2:]
    low, high, frac = _linear_taps(width, shape[1], scale_x)
    image = image[..., low] * (1.0 - frac) + image[..., high] * frac
    low, high, frac = _linear_taps(height, shape[0], scale_y)
    return image[..., low, :] * (1.0 - frac)[:, None] + image[..., high, :] * frac[:, None]


def _centred_gradient(image):
    """Central differences, one-sided (and halved) at the border, like OpenCV's."""
    padded = jnp.pad(image, 1, mode="edge")
    dx = 0.5 * (padded[1:-1, 2:] - padded[1:-1, :-2])
    dy = 0.5 * (padded[2:, 1:-1] - padded[:-2, 1:-1])
    return dx, dy


def _forward_gradient(field):
    """Forward differences, zero on the last column (x) and last row (y)."""
    dx = jnp.pad(field[:, 1:] - field[:, :-1], ((0, 0), (0, 1)))
    dy = jnp.pad(field[1:, :] - field[:-1, :], ((0, 1), (0, 0)))
    return dx, dy


def _divergence(px, py):
    """Backward-difference divergence, the negative adjoint of `_forward_gradient`."""
    return (px - jnp.pad(px[:, :-1], ((0, 0), (1, 0)))) + (py - jnp.pad(py[:-1, :], ((1, 0), (0, 0))))


def _cubic_weights(frac):
    """Keys' cubic convolution weights of the taps at -1, 0, 1, 2 from the floor."""
    a = _CUBIC_A

    def near(d):  # |d| <= 1
        return ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a

    w0, w1, w2 = far(1.0 + frac), near(frac), near(1.0 - frac)
    return w0, w1, w2, 1.0 - w0 - w1 - w2


def _remap_cubic(images, map_x, map_y):
    """Samples images [C, H, W] at (map_x, map_y) [H, W]: bicubic, zero outside.

    Matches OpenCV's remap(INTER_CUBIC, BORDER_CONSTANT 0): positions are
    rounded to 1/32 pixel and taps outside the image read 0.
    """
    channels, height, width = images.shape
    # Positions further out than the kernel's reach all read zeros; clamping
    # keeps the fixed-point conversion far from int32 overflow.
    map_x = jnp.clip(map_x, -4.0, width + 4.0)
    map_y = jnp.clip(map_y, -4.0, height + 4.0)
    fixed_x = jnp.round(map_x * _REMAP_SUBPIXELS).astype(jnp.int32)
    fixed_y = jnp.round(map_y * _REMAP_SUBPIXELS).astype(jnp.int32)
    base_x, base_y = fixed_x // _REMAP_SUBPIXELS, fixed_y // _REMAP_SUBPIXELS
    weights_x = _cubic_weights((fixed_x - base_x * _REMAP_SUBPIXELS).astype(jnp.float32) / _REMAP_SUBPIXELS)
    weights_y = _cubic_weights((fixed_y - base_y * _REMAP_SUBPIXELS).astype(jnp.float32) / _REMAP_SUBPIXELS)
    # One ring of zeros; every tap outside the image is clamped onto it.
    padded_width = width + 2
    flat = jnp.pad(images, ((0, 0), (1, 1), (1, 1))).reshape(channels, -1)
    columns = [jnp.clip(base_x + (k - 1), -1, width) + 1 for k in range(4)]
    result = jnp.zeros((channels, height, width), images.dtype)
    for i in range(4):
        row_offset = (jnp.clip(base_y + (i - 1), -1, height) + 1) * padded_width
        row = jnp.zeros_like(result)
        for k in range(4):
            row = row + jnp.take(flat, row_offset + columns[k], axis=1) * weights_x[k]
        result = result + row * weights_y[i]
    return result


def _batcher_comparators(n: int) -> list[tuple[int, int]]:
    """Batcher's odd-even merge sorting network on n (a power of two) wires."""
    comparators = []
    block = 1
    while block < n:
        step = block
        while step >= 1:
            for start in range(step % block, n - step, 2 * step):
                for i in range(min(step, n - start - step)):
                    low, high = start + i, start + i + step
                    if low // (2 * block) == high // (2 * block):
                        comparators.append((low, high))
            step //= 2
        block *= 2
    return comparators


@functools.lru_cache(maxsize=None)
def _median_network(count: int):
    """A min/max network selecting the median of `count` values.

    Batcher's network on the next power of two, with the missing inputs
    standing for +infinity, pruned back from the median's wire. Returns
    (wires, output wire, [(i, j, keep_min, keep_max)]).
    """
    wires = 1 << (count - 1).bit_length()
    output = count // 2
    kept = []
    needed = {output}
    for i, j in reversed(_batcher_comparators(wires)):
        keep_min, keep_max = i in needed, j in needed
        if keep_min or keep_max:
            kept.append((i, j, keep_min, keep_max))
            needed |= {i, j}
    return wires, output, tuple(reversed(kept))


def _median_filter(image, size: int):
    """size x size median with the border replicated (OpenCV's medianBlur)."""
    height, width = image.shape
    radius = size // 2
    padded = jnp.pad(image, radius, mode="edge")
    wires, output, network = _median_network(size * size)
    # None stands for +infinity: compare-exchanges with it resolve statically.
    values = [padded[dy : dy + height, dx : dx + width] for dy in range(size) for dx in range(size)]
    values += [None] * (wires - len(values))
    for i, j, keep_min, keep_max in network:
        a, b = values[i], values[j]
        if b is None:
            continue
        if a is None:
            values[i], values[j] = b, None
            continue
        # An output no later comparator reads is not computed (pruned network).
        values[i] = jnp.minimum(a, b) if keep_min else None
        values[j] = jnp.maximum(a, b) if keep_max else None
    return values[output]


# ---------------------------------------------------------------------------
# The solver


def _solve_level(image0, image1, u1, u2, params: TVL1Params):
    """TV-L1 on one pyramid level from the initial flow (u1, u2)."""
    height, width = image0.shape
    # OpenCV compares a float32 sum with float32 epsilon^2 * area.
    threshold = np.float32(params.epsilon * params.epsilon * height * width)
    data_step = np.float32(params.lambda_ * params.theta)
    dual_step = np.float32(params.tau / params.theta)
    theta = np.float32(params.theta)
    grid_x = jnp.arange(width, dtype=jnp.float32)[None, :]
    grid_y = jnp.arange(height, dtype=jnp.float32)[:, None]
    gradient1 = jnp.stack([image1, *_centred_gradient(image1)])
    not_converged = jnp.float32(np.finfo(np.float32).max)

    def warping(_, carry):
        u1, u2, dual = carry
        warped, warped_x, warped_y = _remap_cubic(gradient1, grid_x + u1, grid_y + u2)
        grad_sq = warped_x * warped_x + warped_y * warped_y
        # The residual I1(x + u) - I0(x), linearised about the current flow.
        residual_at_zero = warped - warped_x * u1 - warped_y * u2 - image0
        safe_grad_sq = jnp.where(grad_sq > _FLOAT32_EPS, grad_sq, 1.0)

        def primal_dual_step(state):
            count, _, u1, u2, (p11, p12, p21, p22) = state
            # Thresholding step: the pointwise minimiser of the data term.
            residual = residual_at_zero + warped_x * u1 + warped_y * u2
            bound = data_step * grad_sq
            scale = jnp.where(
                residual < -bound,
                data_step,
                jnp.where(residual > bound, -data_step,
                          jnp.where(grad_sq > _FLOAT32_EPS, -residual / safe_grad_sq, 0.0)),
            )
            new_u1 = u1 + scale * warped_x + theta * _divergence(p11, p12)
            new_u2 = u2 + scale * warped_y + theta * _divergence(p21, p22)
            change = jnp.sum(jnp.square(new_u1 - u1) + jnp.square(new_u2 - u2))
            # Dual step: projected gradient ascent on the TV term.
            u1x, u1y = _forward_gradient(new_u1)
            u2x, u2y = _forward_gradient(new_u2)
            norm1 = 1.0 + dual_step * jnp.sqrt(u1x * u1x + u1y * u1y)
            norm2 = 1.0 + dual_step * jnp.sqrt(u2x * u2x + u2y * u2y)
            dual = (
                (p11 + dual_step * u1x) / norm1,
                (p12 + dual_step * u1y) / norm1,
                (p21 + dual_step * u2x) / norm2,
                (p22 + dual_step * u2y) / norm2,
            )
            return count + 1, change, new_u1, new_u2, dual

        def outer_round(state):
            count, change, u1, u2, dual = state
            if params.median_filtering > 1:
                u1 = _median_filter(u1, params.median_filtering)
                u2 = _median_filter(u2, params.median_filtering)
            _, change, u1, u2, dual = jax.lax.while_loop(
                lambda s: (s[0] < params.inner_iterations) & (s[1] > threshold),
                primal_dual_step,
                (0, change, u1, u2, dual),
            )
            return count + 1, change, u1, u2, dual

        _, _, u1, u2, dual = jax.lax.while_loop(
            lambda s: (s[0] < params.outer_iterations) & (s[1] > threshold),
            outer_round,
            (0, not_converged, u1, u2, dual),
        )
        return u1, u2, dual

    zeros = jnp.zeros_like(image0)
    u1, u2, _ = jax.lax.fori_loop(0, params.warps, warping, (u1, u2, (zeros,) * 4))
    return u1, u2


def _tvl1_one_pair(image0, image1, params: TVL1Params):
    """Flow [H, W, 2] from image0 to image1 ([H, W] float32 in 0..255)."""
    shapes = pyramid_shapes(*image0.shape, params)
    inverse_step = 1.0 / params.scale_step
    pyramid0, pyramid1 = [image0], [image1]
    for shape in shapes[1:]:
        pyramid0.append(_resize_linear(pyramid0[-1], shape, inverse_step, inverse_step))
        pyramid1.append(_resize_linear(pyramid1[-1], shape, inverse_step, inverse_step))
    u1 = u2 = jnp.zeros(shapes[-1], jnp.float32)
    for level in reversed(range(len(shapes))):
        u1, u2 = _solve_level(pyramid0[level], pyramid1[level], u1, u2, params)
        if level:
            (h, w), (finer_h, finer_w) = shapes[level], shapes[level - 1]
            scale_y, scale_x = 1.0 / (finer_h / h), 1.0 / (finer_w / w)
            flow = _resize_linear(jnp.stack([u1, u2]), (finer_h, finer_w), scale_y, scale_x)
            u1, u2 = flow[0] * inverse_step, flow[1] * inverse_step
    return jnp.stack([u1, u2], axis=-1)


@functools.partial(jax.jit, static_argnames=("params",))
def tvl1_pairs(prev, next, params: TVL1Params = TVL1Params()):  # noqa: A002 (the API's name)
    """TV-L1 flow of a batch of pairs: prev, next [N, H, W] float32 gray in 0..255.

    Returns [N, H, W, 2] float32: (x, y) displacement in pixels such that
    next(p + flow(p)) ~ prev(p). Jitted, with `params` static.
    """
    if prev.shape != next.shape or prev.ndim != 3:
        raise ValueError(f"expected prev and next [N, H, W] of one shape, got {prev.shape} and {next.shape}")
    if min(prev.shape[1:]) < 3:
        raise ValueError(f"frames must be at least 3x3 pixels, got {prev.shape[1:]}")
    one_pair = functools.partial(_tvl1_one_pair, params=params)
    return jax.vmap(one_pair)(prev.astype(jnp.float32), next.astype(jnp.float32))


def tvl1_flow(frames, *, batch_size: int = 16, progress: bool = False, sharding=None,
              **params) -> np.ndarray:
    """TV-L1 flow between consecutive frames: [T-1, H, W, 2] float32 pixels.

    frames: uint8 or float ([0, 1]) frames [T, H, W] (gray) or [T, H, W, 3]
    (RGB, converted to gray like OpenCV's cvtColor RGB2GRAY). `params` are
    `TVL1Params` fields (OpenCV's defaults when left out). Pairs run
    `batch_size` at a time; the last batch is padded to the same size so the
    compiled function is reused. With `sharding` (a jax.sharding.Sharding over
    devices, splitting the batch), each batch is placed by it and keeps its
    size however few pairs there are. `progress` shows a tqdm bar on stderr.
    """
    settings = TVL1Params(**params)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gray = to_gray(frames)
    if gray.shape[0] < 2:
        raise ValueError(f"need at least 2 frames for flow, got frames of shape {np.shape(frames)}")
    pairs = gray.shape[0] - 1
    if sharding is None:
        batch_size = min(batch_size, pairs)

    def place(batch):
        return jnp.asarray(batch) if sharding is None else jax.device_put(batch, sharding)

    flow = np.empty((pairs, *gray.shape[1:], 2), np.float32)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=pairs, desc="tv-l1 flow", unit="pair")
    pending = None  # (start, count, result): copied out after the next batch is dispatched

    def collect(start, count, result):
        flow[start : start + count] = np.asarray(result)[:count]
        if bar is not None:
            bar.update(count)

    for start in range(0, pairs, batch_size):
        index = np.minimum(np.arange(start, start + batch_size), pairs - 1)
        result = tvl1_pairs(place(gray[index]), place(gray[index + 1]), settings)
        if pending is not None:
            collect(*pending)
        pending = (start, min(batch_size, pairs - start), result)
    collect(*pending)
    if bar is not None:
        bar.close()
    return flow


# ---------------------------------------------------------------------------
# Storage and network conventions


def quantize_flow(flow, bound: float = FLOW_BOUND) -> np.ndarray:
    """Flow in pixels -> uint8: truncated to +-bound, then [-bound, bound] -> 0..255.

    The round trip through `dequantize_flow` is exact to bound / 255 pixels.
    """
    flow = np.clip(np.asarray(flow, np.float32), -bound, bound)
    return np.round((flow + bound) * (255.0 / (2.0 * bound))).astype(np.uint8)


def dequantize_flow(quantized, bound: float = FLOW_BOUND) -> np.ndarray:
    """uint8 from `quantize_flow` -> float32 flow in pixels in [-bound, bound]."""
    quantized = np.asarray(quantized)
    if quantized.dtype != np.uint8:
        raise ValueError(f"expected uint8 quantised flow, got dtype {quantized.dtype}")
    return (quantized.astype(np.float32) * np.float32(2.0 * bound / 255.0) - np.float32(bound)).astype(np.float32)


def flow_to_network(flow, bound: float = FLOW_BOUND) -> np.ndarray:
    """Flow in pixels -> the flow stream's input: flow / bound clipped to [-1, 1].

    uint8 flow is taken as `quantize_flow` output (u8 / 255 * 2 - 1).
    """
    flow = np.asarray(flow)
    if flow.dtype == np.uint8:
        return (flow.astype(np.float32) * np.float32(2.0 / 255.0) - 1.0).astype(np.float32)
    return np.clip(flow.astype(np.float32) / np.float32(bound), -1.0, 1.0)


# ---------------------------------------------------------------------------
# Visualisation


def _colour_wheel() -> np.ndarray:
    """The Middlebury flow colour wheel: [55, 3] RGB in [0, 1] around the hue circle."""
    # (segment length, start colour, end colour): red, yellow, green, cyan,
    # blue, magenta and back, with more steps where the eye tells hues apart.
    stops = [(15, (1, 0, 0), (1, 1, 0)), (6, (1, 1, 0), (0, 1, 0)), (4, (0, 1, 0), (0, 1, 1)),
             (11, (0, 1, 1), (0, 0, 1)), (13, (0, 0, 1), (1, 0, 1)), (6, (1, 0, 1), (1, 0, 0))]
    colours = []
    for length, start, end in stops:
        ramp = np.floor(255.0 * np.arange(length) / length)[:, None] / 255.0
        colours.append(np.asarray(start) * (1.0 - ramp) + np.asarray(end) * ramp)
    return np.concatenate(colours).astype(np.float32)


def flow_to_colour(flow, max_magnitude: float | None = None) -> np.ndarray:
    """Flow [..., H, W, 2] -> uint8 RGB [..., H, W, 3] on the Middlebury colour wheel.

    Hue is direction, saturation is magnitude relative to `max_magnitude`
    (default: the largest in `flow`); zero flow is white, and flow beyond
    the maximum is drawn darker.
    """
    flow = np.asarray(flow, np.float32)
    if flow.shape[-1] != 2:
        raise ValueError(f"expected flow [..., H, W, 2], got shape {flow.shape}")
    u, v = flow[..., 0], flow[..., 1]
    magnitude = np.hypot(u, v)
    if max_magnitude is None:
        max_magnitude = float(magnitude.max()) if magnitude.size else 0.0
    radius = magnitude / max(max_magnitude, 1e-6)
    wheel = _colour_wheel()
    angle = np.arctan2(-v, -u) / math.pi  # in [-1, 1]
    position = (angle + 1.0) / 2.0 * (len(wheel) - 1)
    low = np.floor(position).astype(np.int64)
    frac = (position - low)[..., None]
    high = (low + 1) % len(wheel)
    colour = wheel[low] * (1.0 - frac) + wheel[high] * frac
    inside = (radius <= 1.0)[..., None]
    colour = np.where(inside, 1.0 - radius[..., None] * (1.0 - colour), colour * 0.75)
    return np.round(colour * 255.0).astype(np.uint8)
