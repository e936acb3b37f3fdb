"""I3D features for a whole dataset: windows of `stack` frames every `step`
frames, each seen as 1, 3 or 10 crops, one `.npz` per video.

A window's features are the endpoint's output on exactly that window's frames,
averaged over the time the endpoint leaves (AvgPool: [T', 1024] -> [1024]), as
video_features and the I3D feature releases give them. Each output file is
written whole or not at all; a rerun skips the videos whose file exists, so a
killed run resumes where it was. A video is read in consecutive segments, so its
length does not decide the memory a run needs.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from i3d_jax.atomic_file import write_atomically
from i3d_jax.models.stats import params_sha256
from i3d_jax.video import CROP_SIZE, VIDEO_SUFFIXES

CROP_CHOICES = (1, 3, 10)
FAILURES = "failures.txt"


def window_starts(num_frames: int, stack: int, step: int) -> list[int]:
    """Windows start at 0, step, 2 step, ... while they fit whole; a video shorter
    than one stack is one window of all its frames."""
    if num_frames < 1 or stack < 1 or step < 1:
        raise ValueError(f"num_frames, stack and step must be positive, got {num_frames}, "
                         f"{stack}, {step}")
    if num_frames <= stack:
        return [0]
    return list(range(0, num_frames - stack + 1, step))


def window_timestamps(starts, length: int, fps: float) -> np.ndarray:
    """[windows, 2]: each window's first and last frame time in seconds."""
    starts = np.asarray(starts, np.float64)
    return np.stack([starts / fps, (starts + length - 1) / fps], axis=1)


def crop_views(frames: np.ndarray, size: int, crops: int) -> np.ndarray:
    """[crops, T, size, size, C] of frames [T, H, W, C]: 1, the centre; 3, the
    start, centre and end of the long side; 10, the four corners and the centre,
    each also flipped left to right (the ten-crop convention of anomaly detection)."""
    if crops not in CROP_CHOICES:
        raise ValueError(f"crops must be one of {CROP_CHOICES}, got {crops}")
    _, h, w, _ = frames.shape
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from frames of {h}x{w}")
    top, left = (h - size) // 2, (w - size) // 2
    if crops == 1:
        corners = [(top, left)]
    elif crops == 3:
        corners = ([(top, 0), (top, left), (top, w - size)] if w >= h
                   else [(0, left), (top, left), (h - size, left)])
    else:
        corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), (top, left)]
    views = [frames[:, y:y + size, x:x + size] for y, x in corners]
    if crops == 10:
        views += [v[:, :, ::-1] for v in views]
    return np.stack(views)


def expand_inputs(inputs) -> list[tuple[Path, Path]]:
    """(file, the root its output path is relative to) for each video or .npy named
    by `inputs`: files, folders searched recursively, `@list.txt` (one path a line)."""
    suffixes = set(VIDEO_SUFFIXES) | {".npy"}
    found = []
    for item in inputs:
        if str(item).startswith("@"):
            listing = Path(str(item)[1:])
            if not listing.is_file():
                raise FileNotFoundError(f"{listing}: no such list file")
            lines = [line.strip() for line in listing.read_text().splitlines()]
            found += expand_inputs([line for line in lines if line and not line.startswith("#")])
            continue
        path = Path(item)
        if path.is_dir():
            found += [(p, path) for p in sorted(path.rglob("*"))
                      if p.is_file() and p.suffix.lower() in suffixes]
        elif path.is_file():
            found.append((path, path.parent))
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return found


def output_path(out_dir: Path, path: Path, root: Path) -> Path:
    return Path(out_dir) / path.relative_to(root).with_suffix(".npz")


@dataclass
class WindowFeatures:
    """Runs an endpoint on batches of views, over every local device."""

    loaded: object  # i3d_jax.inference.LoadedModel
    endpoint: str
    batch_size: int = 8
    kernels: str = "auto"
    dtype: object = None
    _run: object = field(default=None, init=False, repr=False)

    def __post_init__(self):
        import jax
        import jax.numpy as jnp

        from i3d_jax import sharding

        model = self.loaded.metadata.build_model(
            final_endpoint=self.endpoint, dtype=self.dtype or jnp.float32, kernels=self.kernels)
        self._mesh = sharding.make_mesh(-1, 1, jax.local_devices())
        self._devices = self._mesh.devices.size
        self._batch = -(-self.batch_size // self._devices) * self._devices
        self._variables = jax.device_put(self.loaded.variables)
        self._sharding = jax.sharding.NamedSharding(
            self._mesh, jax.sharding.PartitionSpec(self._mesh.axis_names))

        @jax.jit
        def run(variables, clips):
            out = model.apply(variables, clips, train=False).astype(jnp.float32)
            # Whatever time the endpoint leaves, averaged: one vector a view.
            return out.reshape(out.shape[0], -1, out.shape[-1]).mean(axis=1) if out.ndim > 2 \
                else out

        self._run = run

    def __call__(self, views: np.ndarray) -> np.ndarray:
        """[N, D] for views [N, T, H, W, C], in batches padded to a multiple of the
        devices (one compile per window length)."""
        import jax

        outputs = []
        for first in range(0, len(views), self._batch):
            part = views[first:first + self._batch]
            padded = np.zeros((self._batch, *part.shape[1:]), np.float32)
            padded[:len(part)] = part
            placed = jax.device_put(padded, self._sharding)
            outputs.append(np.asarray(self._run(self._variables, placed))[:len(part)])
        return np.concatenate(outputs)


# Frames decoded at a time: 10 s at 25 fps, about 0.26 GB in float32 at 256x340.
# With the window being filled and the next chunk decoded meanwhile, a video of any
# length holds about three chunks.
CHUNK_FRAMES = 250


def frame_chunks(path: Path, fps: float, in_channels: int, chunk_frames: int = CHUNK_FRAMES):
    """A video's frames in network range, `chunk_frames` at a time: a video decoded
    at `fps` in consecutive segments (short side 256, RGB to [-1, 1]); an .npy read
    through a memory map (frames already at `fps`, in range)."""
    from i3d_jax.video import (
        RESIZE_SHORT_SIDE, SegmentAfterEndError, VideoDecodeError, _load_npy, decode_video,
        resize_short_side, to_network_range)

    if path.suffix == ".npy":
        frames = _load_npy(path, mmap=True)
        if frames.ndim != 4 or frames.shape[-1] != in_channels:
            raise ValueError(f"{path}: expected an array [T, H, W, {in_channels}], "
                             f"got shape {frames.shape}")
        for first in range(0, len(frames), chunk_frames):
            yield np.asarray(frames[first:first + chunk_frames], np.float32)
        return
    if in_channels != 3:
        raise ValueError(f"{path}: these weights take {in_channels}-channel flow, and flow "
                         "from a video file is not computed here yet: give its flow as an "
                         ".npy [T, H, W, 2] in [-1, 1]")
    first = 0
    while True:
        try:
            video, _ = decode_video(path, fps=fps, start=first / fps,
                                    end=(first + chunk_frames) / fps)
        except SegmentAfterEndError:
            if first == 0:
                raise
            return  # the previous segment ended exactly at the video's end
        except VideoDecodeError:
            if first:
                raise
            # Frames without time stamps cannot be cut into segments: whole, then.
            video, _ = decode_video(path, fps=fps)
            yield to_network_range(resize_short_side(video, RESIZE_SHORT_SIDE))
            return
        yield to_network_range(resize_short_side(video, RESIZE_SHORT_SIDE))
        if len(video) < chunk_frames:
            return
        first += chunk_frames


def stream_windows(chunks, stack: int, step: int, counted: dict):
    """(start, frames of the window) as `window_starts` places them, from consecutive
    chunks of frames, holding no more than a chunk and a window; `counted["frames"]`
    is the video's length once the stream ends."""
    buffer, first, start, total = None, 0, 0, 0
    for chunk in chunks:
        buffer = chunk if buffer is None else np.concatenate([buffer, chunk])
        total += len(chunk)
        while start + stack <= total:
            yield start, buffer[start - first:start - first + stack]
            start += step
        # Keep only frames a later window can use (those from `start` on).
        drop = min(start - first, len(buffer))
        if drop > 0:
            buffer, first = buffer[drop:], first + drop
    counted["frames"] = total
    if 0 < total < stack:  # shorter than a stack: one window of all its frames
        yield 0, buffer


def video_features(chunks, features: WindowFeatures, *, stack: int, step: int, crops: int,
                   crop_size: int = CROP_SIZE) -> tuple[np.ndarray, np.ndarray, int]:
    """([windows, crops, D], window starts, frames) of a video given as consecutive
    chunks of frames [T, H, W, C] in network range."""
    counted = {}
    # A batch's worth of windows at a time: the views of a whole video would hold
    # crops x stack frames per window (90 GB for 10 minutes in 10 crops).
    per_batch = max(1, features.batch_size // crops)
    starts, out, views = [], [], []
    for start, window in stream_windows(chunks, stack, step, counted):
        starts.append(start)
        views.append(crop_views(window, crop_size, crops))
        if len(views) == per_batch:
            out.append(features(np.concatenate(views)))
            views = []
    if views:
        out.append(features(np.concatenate(views)))
    if not starts:
        raise ValueError("no frames")
    return (np.concatenate(out).reshape(len(starts), crops, -1), np.asarray(starts),
            counted["frames"])


def prefetched(iterable):
    """`iterable` produced one item ahead in a thread (its errors raised here), so
    decoding the next chunk overlaps computing on this one."""
    import queue
    import threading

    items = queue.Queue(maxsize=1)
    done = object()

    def produce():
        try:
            for item in iterable:
                items.put((item, None))
        except BaseException as error:  # handed to the consumer
            items.put((None, error))
        items.put((done, None))

    threading.Thread(target=produce, daemon=True).start()
    while True:
        item, error = items.get()
        if error is not None:
            raise error
        if item is done:
            return
        yield item


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: list = field(default_factory=list)
    failures_file: Path | None = None


def extract_dataset(inputs, out_dir, features: WindowFeatures, *, stack: int, step: int,
                    crops: int, fps: float, overwrite: bool = False, weights: str = "",
                    crop_size: int = CROP_SIZE, process_index: int = 0,
                    process_count: int = 1, chunk_frames: int = CHUNK_FRAMES) -> Summary:
    """One `.npz` per video under `out_dir` (see the module's docstring); this
    process takes every `process_count`-th video from the `process_index`-th."""
    from tqdm import tqdm

    from i3d_jax.video import VideoDecodeError

    out_dir = Path(out_dir)
    videos = expand_inputs(inputs)[process_index::process_count]
    if not videos:
        raise FileNotFoundError(f"no video or .npy among {', '.join(map(str, inputs))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    in_channels = features.loaded.metadata.in_channels
    stream = features.loaded.metadata.stream
    sha = params_sha256(features.loaded.variables["params"])
    summary = Summary()
    todo = []
    for path, root in videos:
        target = output_path(out_dir, path, root)
        if target.exists() and not overwrite:
            summary.skipped += 1
        else:
            todo.append((path, target))
    if summary.skipped:
        print(f"i3d-jax features: {summary.skipped} of {len(videos)} videos already done "
              "(their files exist; --overwrite redoes them)", file=sys.stderr)

    progress = tqdm(total=len(todo), unit="video", file=sys.stderr, dynamic_ncols=True)
    for path, target in todo:
        try:
            out, starts, num_frames = video_features(
                prefetched(frame_chunks(path, fps, in_channels, chunk_frames)), features,
                stack=stack, step=step, crops=crops, crop_size=crop_size)
        except (VideoDecodeError, ValueError, OSError) as error:
            progress.write(f"i3d-jax features: skipping {path}: {error}")
            summary.failed.append(f"{path}\t{error}")
            progress.update()
            continue
        length = min(stack, num_frames)
        record = {stream: out, "timestamps": window_timestamps(starts, length, fps),
                  "fps": np.float64(fps), "num_frames": np.int64(num_frames),
                  "stack": np.int64(stack), "step": np.int64(step),
                  "crops": np.int64(crops), "endpoint": np.str_(features.endpoint),
                  "weights": np.str_(weights), "params_sha256": np.str_(sha)}
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, lambda f: np.savez(f, **record))
        summary.done += 1
        progress.update()
    progress.close()
    # Each host lists its own failures: several writers, several files.
    failures = out_dir / (FAILURES if process_count == 1
                          else f"failures.process_{process_index}.txt")
    summary.failures_file = failures
    if summary.failed:
        text = "".join(line + "\n" for line in summary.failed)
        write_atomically(failures, lambda f: f.write(text.encode()))
    elif failures.exists():
        failures.unlink()  # every video of this run has its file now
    return summary
