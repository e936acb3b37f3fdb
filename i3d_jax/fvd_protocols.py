"""How codebases turn videos into FVD beyond the I3D weights: the protocols
(`tf`, `styleganv`), which frames of a video a clip takes, and the two resizes
to 224x224 with the scaling to [-1, 1] (JAX, jit-friendly).

Each choice of `STYLEGANV` is cited to its file and line in universome/stylegan-v
(commit 3fecd69c602e1cda204357201461c0fb0a634909).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import jax.numpy as jnp
import numpy as np

FVD_RESOLUTION = (224, 224)


@dataclass(frozen=True)
class Protocol:
    """How a codebase turns sets of videos into an FVD, beyond the I3D weights."""

    name: str
    # "tf1": TF1 resize_bilinear (align_corners=False, half_pixel_centers=False);
    # "half_pixel": PyTorch's F.interpolate(mode="bilinear", align_corners=False).
    resize: str
    ddof: int  # the covariance's N - ddof
    frames: int | None  # frames per clip by default (None: all)
    max_videos: int | None  # the first N videos of each set (sorted), None: all
    real_start: str  # where a real video's clip starts: "first" or "random"


# The TF code of Unterthiner et al. (google-research/frechet_video_distance) with
# TF-GAN's statistics.
TF = Protocol("tf", resize="tf1", ddof=1, frames=None, max_videos=None, real_start="first")

# StyleGAN-V's `fvd2048_16f` (src/metrics/metric_main.py:117; `--frames 128` is
# `fvd2048_128f`, line 123, and `--frames 16 --frame-stride 8`
# `fvd2048_128f_subsample8f`, line 130). Paths are under src/ of universome/stylegan-v
# at 3fecd69c602e1cda204357201461c0fb0a634909:
# - detector: TF-Hub's I3D as TorchScript, called with rescale=True, resize=True,
#   return_features=True (metrics/frechet_video_distance.py:22-23): the 400 logits
#   before the softmax, of uint8 frames in 0..255 [N, C, T, H, W] as stored
#   (metrics/metric_utils.py:234, 245), grey repeated to 3 channels (243-244);
#   rescale is x / 255 * 2 - 1 (the author, universome/fvd-comparison issue 4);
#   resize is to 224x224 inside the TorchScript: per frame, bilinear with half-pixel
#   centres, no antialiasing (the docstring at frechet_video_distance.py:1-4 says it
#   matches TF "up to the upsampling operation"; the metric code's own, commented-out
#   resizes are `interpolate(..., size=(T, h, w), mode='trilinear',
#   align_corners=False)`, metric_utils.py:237-238, which per frame is exactly
#   bilinear with half-pixel centres); no crop, so a non-square video is stretched.
# - clips: `num_frames` consecutive frames (`subsample_factor` apart),
#   frechet_video_distance.py:25-28; a real video's clip starts at a uniformly
#   random frame, training/dataset.py:402-406 (`random.randint(0, L - n * s + s - 1)`),
#   and a real video shorter than n * s frames is dropped (dataset.py:323-324,
#   `discard_short_videos`); a generated video's clip starts at frame 0
#   (metric_utils.py:309; frechet_video_distance.py:38-40 for generated videos
#   read from files).
# - sets: the first 2048 videos of the real set in sorted order (max_real=2048,
#   metric_utils.py:222-230 with dataset.py:53-56) and 2048 generated videos
#   (num_gen=2048); no flips (metric_main.py:116, xflip=False).
# - statistics: mean and the biased covariance (divided by N) in float64
#   (metric_utils.py:99-101, 124-126); the Fréchet distance as
#   frechet_video_distance.py:54-56 (computed here without scipy's sqrtm: the same
#   value, minus sqrtm's rounding residue).
# The offsets of real clips come from PyTorch DataLoader workers' unseeded RNG in
# StyleGAN-V, so they are drawn here from `seed` instead: the same distribution,
# not the same draws.
STYLEGANV = Protocol("styleganv", resize="half_pixel", ddof=0, frames=16, max_videos=2048,
                     real_start="random")
PROTOCOLS = {p.name: p for p in (TF, STYLEGANV)}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown FVD protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def clip_start(num_frames: int, frames: int, stride: int, start: str, rng) -> int | None:
    """Where a clip of `frames` frames `stride` apart starts in a video of
    `num_frames` ("first": 0; "random": uniform over every start that fits, as
    StyleGAN-V's randint(0, L - n * s + s - 1)); None when the video is shorter
    than n * s frames (StyleGAN-V's discard rule)."""
    if num_frames < frames * stride:
        return None
    if start == "first":
        return 0
    return int(rng.integers(0, num_frames - frames * stride + stride))


# ---------------------------------------------------------------------------
# Preprocessing (JAX): the TF code's resize and scaling


def _legacy_bilinear_taps(in_size: int, out_size: int):
    """Source rows (lower, upper) and weights of TF1 resize_bilinear's legacy mode."""
    # TF computes the scale and source coordinates in float32; so do we, for
    # the same interpolation weights.
    scale = np.float32(in_size) / np.float32(out_size)
    source = np.arange(out_size, dtype=np.float32) * scale
    lower = np.floor(source)
    weight = (source - lower).astype(np.float32)
    lower = lower.astype(np.int32)
    upper = np.minimum(np.ceil(source).astype(np.int32), in_size - 1)
    return lower, upper, weight


def _lerp_along(x, axis: int, in_size: int, out_size: int):
    lower, upper, weight = _legacy_bilinear_taps(in_size, out_size)
    a = jnp.take(x, lower, axis=axis)
    b = jnp.take(x, upper, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = out_size
    return a + (b - a) * jnp.asarray(weight).reshape(shape)


def resize_bilinear_tf1(frames, size: Sequence[int]):
    """TF1 `tf.image.resize_bilinear(frames, size)` with its defaults, in float32.

    frames: [..., H, W, C]. Interpolates along the width first, then the
    height, as TF's kernel does, so results agree to float32 rounding.
    """
    out_h, out_w = size
    *_, in_h, in_w, _ = frames.shape
    x = frames.astype(jnp.float32)
    if (in_h, in_w) == (out_h, out_w):
        return x  # TF's weights are all 0 here: the identity
    x = _lerp_along(x, x.ndim - 2, in_w, out_w)
    return _lerp_along(x, x.ndim - 3, in_h, out_h)


def _half_pixel_taps(in_size: int, out_size: int):
    """Source rows (lower, upper) and weights of PyTorch's bilinear interpolate with
    align_corners=False: source = (i + 0.5) * in / out - 0.5, clamped at 0, as its
    CPU kernel computes it (aten/src/ATen/native/UpSample.h,
    area_pixel_compute_source_index): the scale in float32, the source position
    with one rounding to float32 (a fused multiply-add; rounding the product first
    moves weights by up to 1e-6)."""
    scale = np.float64(np.float32(in_size) / np.float32(out_size))
    source = np.maximum(np.float32(scale * (np.arange(out_size) + 0.5) - 0.5), np.float32(0))
    lower = np.floor(source).astype(np.int32)
    weight = (source - lower).astype(np.float32)
    upper = np.minimum(lower + 1, in_size - 1)
    return lower, upper, weight


def _interpolate_along(x, axis: int, taps):
    lower, upper, weight = taps
    a = jnp.take(x, lower, axis=axis)
    b = jnp.take(x, upper, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = len(lower)
    weight = jnp.asarray(weight).reshape(shape)
    return a * (1.0 - weight) + b * weight


def resize_bilinear_half_pixel(frames, size: Sequence[int]):
    """`torch.nn.functional.interpolate(x, size, mode="bilinear",
    align_corners=False)` (no antialiasing) of frames [..., H, W, C], in float32."""
    out_h, out_w = size
    *_, in_h, in_w, _ = frames.shape
    x = frames.astype(jnp.float32)
    if (in_h, in_w) == (out_h, out_w):
        return x
    x = _interpolate_along(x, x.ndim - 2, _half_pixel_taps(in_w, out_w))
    return _interpolate_along(x, x.ndim - 3, _half_pixel_taps(in_h, out_h))


def preprocess(videos, resolution: Sequence[int] = FVD_RESOLUTION, resize: str = "tf1"):
    """uint8 videos [B, T, H, W, 3] in 0..255 -> float32 [B, T, 224, 224, 3] in [-1, 1]:
    "tf1", TF1's resize_bilinear then 2 x / 255 - 1 (the TF code); "half_pixel",
    x / 255 * 2 - 1 then PyTorch's bilinear interpolate (StyleGAN-V's TorchScript I3D,
    rescale before resize)."""
    if resize == "tf1":
        return 2.0 * resize_bilinear_tf1(videos, resolution) / 255.0 - 1.0
    if resize == "half_pixel":
        scaled = videos.astype(jnp.float32) / 255.0 * 2.0 - 1.0
        return resize_bilinear_half_pixel(scaled, resolution)
    raise ValueError(f"unknown resize {resize!r}; choose tf1 or half_pixel")
