"""Clips whose class only motion tells: the generated default dataset.

Every clip shows the same kind of scene: a periodic colour texture filling
the frame and a textured disk on it, with texture, disk size, position and
orientation drawn at random, plus a little pixel noise. Classes differ only
in how the scene moves:

- up / down: the whole scene translates vertically, slow or fast;
- sideways: it translates horizontally, left or right at random;
- rotate: the disk spins about its centre on a still background, either sense.

Every frame of every class is a draw from the same distribution (texture
phases, disk position and angle are uniform and the scene wraps around the
frame edges), so no single frame can tell the class. Classes are unchanged
by a left-right flip (which swaps left with right and the two rotation
senses), so the standard flip augmentation keeps labels right.

Rendering is analytic (sums of sinusoids), so the true optical flow is known
exactly; it is returned with the frames.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from i3d_jax.datasets.video_builder import make_example, repeat_last_field

SLOW_PIXELS_PER_FRAME = 1.0
FAST_PIXELS_PER_FRAME = 2.5


@dataclasses.dataclass(frozen=True)
class Motion:
    name: str
    kind: str  # "translate" or "rotate"
    direction: tuple[float, float] = (0.0, 0.0)  # (x, y) unit vector; x sign drawn for sideways
    speed: float = SLOW_PIXELS_PER_FRAME  # pixels per frame (at the disk's rim for rotations)


MOTIONS = (
    Motion("up_slow", "translate", (0.0, -1.0), SLOW_PIXELS_PER_FRAME),
    Motion("up_fast", "translate", (0.0, -1.0), FAST_PIXELS_PER_FRAME),
    Motion("down_slow", "translate", (0.0, 1.0), SLOW_PIXELS_PER_FRAME),
    Motion("down_fast", "translate", (0.0, 1.0), FAST_PIXELS_PER_FRAME),
    Motion("sideways_slow", "translate", (1.0, 0.0), SLOW_PIXELS_PER_FRAME),
    Motion("sideways_fast", "translate", (1.0, 0.0), FAST_PIXELS_PER_FRAME),
    Motion("rotate_slow", "rotate", speed=SLOW_PIXELS_PER_FRAME),
    Motion("rotate_fast", "rotate", speed=FAST_PIXELS_PER_FRAME),
)
CLASS_NAMES = tuple(m.name for m in MOTIONS)

_BACKGROUND_WAVES = 8
_DISK_WAVES = 6
_NOISE_STD = 2.0


def _wrapped(delta, period):
    """Signed distance on a circle of `period` (the scene wraps around the frame)."""
    return (delta + period / 2) % period - period / 2


def _waves(cos_x, sin_x, cos_y, sin_y, weights):
    """sum_k weights[k, c] * cos(A_k[t, x] + B_k[t, y]) as [T, H, W, C], by the angle-sum rule.

    Separating x from y turns per-pixel cosines into one batched matmul.
    """
    num_frames, width, height = cos_x.shape[1], cos_x.shape[2], cos_y.shape[2]
    rows = np.concatenate([cos_y, sin_y], 0).transpose(1, 2, 0)  # [T, H, 2K]
    columns = (np.concatenate([cos_x, -sin_x], 0)[..., None]
               * np.concatenate([weights, weights], 0)[:, None, None])
    columns = columns.transpose(1, 0, 2, 3).reshape(num_frames, -1, width * weights.shape[1])
    return np.matmul(rows, columns).reshape(num_frames, height, width, weights.shape[1])


def render_clip(label: int, rng: np.random.Generator, *, num_frames: int, height: int,
                width: int) -> tuple[np.ndarray, np.ndarray]:
    """One clip of class `label`: (uint8 frames [T, H, W, 3], float32 flow [T-1, H, W, 2] px).

    Flow field t maps pixels of frame t to frame t+1 (x then y); it is exact
    for the noiseless scene.
    """
    motion = MOTIONS[label]
    t = np.arange(num_frames, dtype=np.float32)[:, None]  # [T, 1]
    x = np.arange(width, dtype=np.float32)[None, :]
    y = np.arange(height, dtype=np.float32)[None, :]

    # Background: periodic waves (whole cycles across the frame), so shifting it wraps exactly.
    kx = rng.integers(-4, 5, _BACKGROUND_WAVES).astype(np.float32)
    ky = rng.integers(-4, 5, _BACKGROUND_WAVES).astype(np.float32)
    ky = np.where((kx == 0) & (ky == 0), 1.0, ky).astype(np.float32)
    bg_phase = rng.uniform(0, 2 * np.pi, _BACKGROUND_WAVES).astype(np.float32)
    bg_weights = _colour_weights(rng, _BACKGROUND_WAVES)

    # Disk: random size, position, orientation and (non-periodic) texture.
    radius = np.float32(rng.uniform(0.18, 0.26) * min(height, width))
    centre = np.array([rng.uniform(0, width), rng.uniform(0, height)], np.float32)
    angle0 = np.float32(rng.uniform(0, 2 * np.pi))
    cycles = rng.uniform(1.5, 4.0, _DISK_WAVES) / (2 * radius)
    orientation = rng.uniform(0, 2 * np.pi, _DISK_WAVES)
    disk_k = np.stack([cycles * np.cos(orientation), cycles * np.sin(orientation)], -1)
    disk_k = disk_k.astype(np.float32)
    disk_phase = rng.uniform(0, 2 * np.pi, _DISK_WAVES).astype(np.float32)
    disk_weights = _colour_weights(rng, _DISK_WAVES)

    if motion.kind == "translate":
        sign = rng.choice([-1.0, 1.0]) if motion.direction[0] else 1.0
        velocity = motion.speed * np.array([sign * motion.direction[0], motion.direction[1]],
                                           np.float32)
        spin = np.float32(0.0)
    else:
        velocity = np.zeros(2, np.float32)
        spin = np.float32(rng.choice([-1.0, 1.0]) * motion.speed / radius)  # radians per frame
    noise = rng.standard_normal((num_frames, height, width, 3), dtype=np.float32) * _NOISE_STD

    px = x - velocity[0] * t  # [T, W]: scene coordinates seen at each pixel column
    py = y - velocity[1] * t  # [T, H]
    bg_x = 2 * np.pi * kx[:, None, None] * px[None] / width + bg_phase[:, None, None]  # [K, T, W]
    bg_y = 2 * np.pi * ky[:, None, None] * py[None] / height  # [K, T, H]
    background = _waves(np.cos(bg_x), np.sin(bg_x), np.cos(bg_y), np.sin(bg_y), bg_weights)

    dx = _wrapped(px - centre[0], width)  # [T, W]
    dy = _wrapped(py - centre[1], height)  # [T, H]
    # Texture coordinates are the disk's own frame, turned by -angle: k . R(-a) d = (R(a) k) . d.
    angle = angle0 + spin * t  # [T, 1]
    ca, sa = np.cos(angle)[None], np.sin(angle)[None]  # [1, T, 1]
    kxr = ca * disk_k[:, 0, None, None] - sa * disk_k[:, 1, None, None]  # [K, T, 1]
    kyr = sa * disk_k[:, 0, None, None] + ca * disk_k[:, 1, None, None]
    disk_x = 2 * np.pi * kxr * dx[None] + disk_phase[:, None, None]  # [K, T, W]
    disk_y = 2 * np.pi * kyr * dy[None]  # [K, T, H]
    disk = _waves(np.cos(disk_x), np.sin(disk_x), np.cos(disk_y), np.sin(disk_y), disk_weights)

    distance = np.sqrt(dx[:, None, :] ** 2 + dy[:, :, None] ** 2)  # [T, H, W]
    alpha = np.clip(radius + 0.5 - distance, 0.0, 1.0)[..., None]

    image = 128.0 + 70.0 * (background + alpha * (disk - background)) + noise
    frames = np.clip(np.round(image), 0, 255).astype(np.uint8)

    flow = np.zeros((max(num_frames - 1, 0), height, width, 2), np.float32)
    if motion.kind == "translate":
        flow[...] = velocity
    else:
        inside = alpha[0, ..., 0] > 0.5
        c, s = np.cos(spin), np.sin(spin)
        d0x = np.broadcast_to(dx[0][None, :], (height, width))
        d0y = np.broadcast_to(dy[0][:, None], (height, width))
        # Where a point of the (still) disk goes after one frame's turn.
        flow[..., 0] = np.where(inside, c * d0x - s * d0y - d0x, 0.0)
        flow[..., 1] = np.where(inside, s * d0x + c * d0y - d0y, 0.0)
    return frames, flow


def _colour_weights(rng, count):
    """Per-wave RGB weights, scaled so each channel's sum of waves has unit variance."""
    weights = rng.uniform(0.3, 1.0, (count, 1)) * rng.uniform(-1, 1, (count, 3))
    return (weights / np.sqrt((weights ** 2).sum(0) / 2)).astype(np.float32) / 2.5


def clip_rng(seed: int, split_index: int, example_index: int) -> np.random.Generator:
    """Each clip's own generator: clips do not depend on build order (or on Beam)."""
    return np.random.default_rng([seed, split_index, example_index])


def clip_label(example_index: int) -> int:
    """Balanced classes: example i has class i mod the number of classes."""
    return example_index % len(MOTIONS)


@dataclasses.dataclass(frozen=True)
class GeneratedClip:
    """One clip to render: its class and its place (split, index) in the dataset."""

    video_id: str
    label: int
    split_index: int
    index: int


@dataclasses.dataclass(frozen=True)
class ClipRenderer:
    """GeneratedClip -> stored example; picklable for Beam workers."""

    seed: int
    num_frames: int
    height: int
    width: int
    fps: float
    jpeg_quality: int
    with_flow: bool

    def __call__(self, clip: GeneratedClip) -> dict:
        rng = clip_rng(self.seed, clip.split_index, clip.index)
        frames, flow = render_clip(clip.label, rng, num_frames=self.num_frames,
                                   height=self.height, width=self.width)
        flow_u8 = None
        if self.with_flow:
            from i3d_jax.flow import quantize_flow  # the stored format of every dataset's flow

            flow_u8 = repeat_last_field(quantize_flow(flow), len(frames))
        return make_example(video_id=clip.video_id, label=clip.label,
                            label_name=CLASS_NAMES[clip.label], frames=frames,
                            source_fps=self.fps, jpeg_quality=self.jpeg_quality, flow_u8=flow_u8)
