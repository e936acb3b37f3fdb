"""Reading videos (PyAV, no system ffmpeg) and DeepMind's test preprocessing."""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from i3d_jax.arrays import load_array
from i3d_jax.atomic_file import atomic_output
from i3d_jax.streams import STREAM_CHANNELS, accepted_channels

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".gif", ".mov", ".m4v")
VIZ_SUFFIXES = (".gif", ".mp4")
TARGET_FPS = 25.0
RESIZE_SHORT_SIDE = 256
CROP_SIZE = 224


class VideoDecodeError(ValueError):
    """A video that cannot be read, named with its path."""


class SegmentAfterEndError(VideoDecodeError):
    """A segment that starts at or after the video's end (what a reader of a video in
    consecutive segments meets once it has read it all)."""


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
        error = SegmentAfterEndError if start > 0 else VideoDecodeError
        raise error(f"{path}: no frames could be decoded in [{start}, {end}) s")
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


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """An .npy clip; an unreadable one is a VideoDecodeError, as a video is."""
    try:
        return load_array(path, mmap=mmap)
    except (OSError, ValueError) as e:
        raise VideoDecodeError(str(e)) from None


def estimated_frames(path: str | Path, fps: float = TARGET_FPS) -> int | None:
    """The frames `load_clip(path)` would give, without decoding: an .npy's
    length, or a video's duration times `fps`; None where unknown."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            return int(_load_npy(path, mmap=True).shape[0])
        except (VideoDecodeError, IndexError):
            return None
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.duration and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration:
                seconds = container.duration / av.time_base
            else:
                return None
    except Exception:  # unreadable: load_clip reports it by name
        return None
    return int(math.floor(seconds * fps + 1e-6))


def _resample(path, video, times, source_fps, fps, start, end):
    # The last source frame stays on screen for one source frame period.
    frame_period = 1.0 / source_fps if source_fps else (times[-1] - times[0]) / max(len(times) - 1, 1)
    shown_until = times[-1] + frame_period
    if end is not None:
        shown_until = min(shown_until, end)
    if shown_until <= start:
        raise SegmentAfterEndError(
            f"{path}: the video ends at {times[-1]:.2f} s, before the segment [{start}, {end}) s"
        )
    count = int(math.floor((shown_until - start) * fps + 1e-6))
    if count < 1 and start > 0:
        # No output time falls in what is left: the segment starts at the end (a
        # reader of consecutive segments is done), as a whole decode would count.
        raise SegmentAfterEndError(
            f"{path}: the video ends at {shown_until:.3f} s, before an output frame of "
            f"the segment [{start}, {end}) s")
    count = max(1, count)
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
        clip = _load_npy(path)
        if clip.ndim != 4 or clip.shape[-1] != in_channels:
            raise ValueError(
                f"{path}: expected an array [T, H, W, {in_channels}], got shape {clip.shape}"
            )
        clip = clip.astype(np.float32)
        return clip[:max_frames] if max_frames else clip
    if in_channels not in STREAM_CHANNELS.values():
        raise ValueError(f"{path}: a video gives {accepted_channels()} channels, not {in_channels}")
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


def load_frames(path, fps: float | None, max_frames: int | None, resize_short_side_to: int | None):
    """uint8 frames [T, H, W] or [T, H, W, 3] (at least 2, for flow) from a
    video file (resampled to `fps`; None or 0 keeps every frame) or an .npy."""
    path = Path(path)
    if path.suffix == ".npy":
        frames = _load_npy(path)
        if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
            raise ValueError(
                f"{path}: expected uint8 frames [T, H, W] or [T, H, W, 3], "
                f"got {frames.dtype} array of shape {frames.shape}"
            )
        frames = frames[:max_frames] if max_frames else frames
    else:
        frames, _ = decode_video(path, fps=fps or None, max_frames=max_frames)
    if resize_short_side_to:
        gray = frames.ndim == 3
        frames = resize_short_side(frames[..., None] if gray else frames, resize_short_side_to)
        frames = frames[..., 0] if gray else frames
    if frames.shape[0] < 2:
        raise ValueError(f"{path}: flow needs at least 2 frames, got {frames.shape[0]}")
    return frames


def write_visualisation(path, flow, fps: float, max_magnitude: float | None = None):
    """Writes the colour-wheel rendering of flow [T, H, W, 2] as a GIF (PIL)
    or MP4 (PyAV, H.264), atomically."""
    from i3d_jax.flow import flow_to_colour

    path = Path(path)
    if path.suffix not in VIZ_SUFFIXES:
        raise ValueError(f"--viz {path} must end in {' or '.join(VIZ_SUFFIXES)}")
    if max_magnitude is None:
        # One scale for the whole clip, so colours compare across frames.
        max_magnitude = float(np.hypot(flow[..., 0], flow[..., 1]).max())
    frames = flow_to_colour(flow, max_magnitude)
    with atomic_output(path) as tmp:
        if path.suffix == ".gif":
            write_gif(tmp, frames, fps)
        else:
            write_mp4(tmp, frames, fps)


def write_gif(path, frames, fps: float):
    """uint8 RGB frames [T, H, W, 3] as a looping GIF."""
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=round(1000.0 / fps), loop=0)


def write_mp4(path, frames, fps: float):
    """uint8 RGB frames [T, H, W, 3] as H.264 MP4 (yuv420p, CRF 18)."""
    import av

    # H.264 in yuv420p needs even sides: repeat the last row/column if odd.
    _, height, width, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
