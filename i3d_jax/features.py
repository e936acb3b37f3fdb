"""I3D features for a whole dataset: windows of `stack` frames every `step`
frames, each seen as 1, 3 or 10 crops, one `.npz` per video.

A window's features are the endpoint's output on exactly that window's frames,
averaged over the time the endpoint leaves (AvgPool: [T', 1024] -> [1024]), as
video_features and the I3D feature releases give them. Each output file is
written whole or not at all; a rerun skips the videos whose file exists, so a
killed run resumes where it was. A video is read in consecutive segments, so its
length does not decide the memory a run needs.

Streams: RGB, and flow computed from the video as DeepMind did (TV-L1 on the
frames at 25 fps with short side 256, +-20 px to [-1, 1]) on the same devices.
Flow at frame t is the motion from t to t + 1, so with flow a video of F frames
has F - 1 positions for windows, and both streams' windows are the same frames.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from i3d_jax.atomic_file import write_atomically
from i3d_jax.models.stats import params_sha256
from i3d_jax.video import CROP_SIZE, RESIZE_SHORT_SIDE, VIDEO_SUFFIXES, _load_npy

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
        self._sharding = sharding.batch_sharding(self._mesh)

        @jax.jit
        def run(variables, clips):
            out = model.apply(variables, clips, train=False).astype(jnp.float32)
            # Whatever time the endpoint leaves, averaged: one vector a view.
            return out.reshape(out.shape[0], -1, out.shape[-1]).mean(axis=1) if out.ndim > 2 \
                else out

        self._run = run

    @property
    def in_channels(self) -> int:
        return self.loaded.metadata.in_channels

    def __call__(self, views: np.ndarray) -> np.ndarray:
        """[N, D] for views [N, T, H, W, C], in batches of `batch_size` padded to a
        multiple of the devices: one compile per window length and batch, no more
        than batch_size / devices batches, and no view computed for nothing beyond
        that padding (a video's last, short batch is not padded to a whole one)."""
        import jax

        outputs = []
        for first in range(0, len(views), self._batch):
            part = views[first:first + self._batch]
            size = -(-len(part) // self._devices) * self._devices
            padded = np.zeros((size, *part.shape[1:]), np.float32)
            padded[:len(part)] = part
            placed = jax.device_put(padded, self._sharding)
            outputs.append(np.asarray(self._run(self._variables, placed))[:len(part)])
        return np.concatenate(outputs)


# Frames decoded at a time: 10 s at 25 fps, about 0.26 GB in float32 at 256x340.
# With the window being filled and the next chunk decoded meanwhile, a video of any
# length holds about three chunks.
CHUNK_FRAMES = 250
# Frame pairs per TV-L1 batch and device: one compile per frame size.
FLOW_PAIRS_PER_DEVICE = 8


@dataclass
class FlowOnDevices:
    """TV-L1 flow (`i3d_jax.flow`, OpenCV's defaults) of consecutive frames, pairs in
    batches sharded over every local device. A pair's flow is the one `tvl1_flow`
    gives it in a batch of `pairs_per_device` pairs: the solver stops each pair by a
    threshold, and a batch of another size can round near it the other way (then a
    few border pixels move by up to about a pixel)."""

    pairs_per_device: int = FLOW_PAIRS_PER_DEVICE
    params: object = None  # i3d_jax.flow.TVL1Params; None: OpenCV's defaults, DeepMind's

    def __post_init__(self):
        import dataclasses

        import jax

        from i3d_jax import sharding
        from i3d_jax.flow import TVL1Params

        self._params = dataclasses.asdict(self.params or TVL1Params())
        mesh = sharding.make_mesh(-1, 1, jax.local_devices())
        self._batch = self.pairs_per_device * mesh.devices.size
        self._sharding = sharding.batch_sharding(mesh)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """[T - 1, H, W, 2] flow in pixels of uint8 frames [T, H, W, 3]."""
        from i3d_jax.flow import tvl1_flow

        return tvl1_flow(frames, batch_size=self._batch, sharding=self._sharding,
                         **self._params)


def decoded_chunks(path: Path, fps: float, chunk_frames: int = CHUNK_FRAMES,
                   short_side: int = RESIZE_SHORT_SIDE):
    """uint8 frames [T, H, W, 3] of a video at `fps`, short side resized to
    `short_side`, in consecutive segments of `chunk_frames`."""
    from i3d_jax.video import SegmentAfterEndError, VideoDecodeError, decode_video, \
        resize_short_side

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
            yield resize_short_side(video, short_side)
            return
        yield resize_short_side(video, short_side)
        if len(video) < chunk_frames:
            return
        first += chunk_frames


def with_flow(path: Path, chunks, streams, flow: FlowOnDevices):
    """Network input with `streams`' channels side by side ([T, H, W, 3 + 2] for
    rgb,flow) from uint8 chunks: frame t with the TV-L1 flow from t to t + 1, +-20 px
    to [-1, 1] (DeepMind's recipe). The last frame has no flow after it, so a video of
    F frames gives F - 1 positions."""
    from i3d_jax.flow import flow_to_network
    from i3d_jax.video import to_network_range

    previous, positions = None, 0
    for chunk in chunks:
        frames = chunk if previous is None else np.concatenate([previous, chunk])
        previous = frames[-1:]
        if len(frames) < 2:
            continue
        parts = {"flow": flow_to_network(flow(frames))}
        if "rgb" in streams:
            parts["rgb"] = to_network_range(frames[:-1])
        positions += len(frames) - 1
        yield np.concatenate([parts[s] for s in streams], axis=-1)
    if not positions:
        raise ValueError(f"{path}: flow needs at least 2 frames, the video has "
                         f"{0 if previous is None else 1}")


def network_chunks(path: Path, fps: float, streams, channels: int, *,
                   chunk_frames: int = CHUNK_FRAMES, short_side: int = RESIZE_SHORT_SIDE,
                   flow: FlowOnDevices | None = None):
    """A video's network input, `chunk_frames` at a time, `streams`' channels side by
    side: a video decoded at `fps` in consecutive segments (short side `short_side`,
    RGB to [-1, 1], flow as `with_flow`); an .npy read through a memory map (frames of
    one stream already at `fps`, in range)."""
    from i3d_jax.video import to_network_range

    if path.suffix == ".npy":
        frames = _load_npy(path, mmap=True)
        if len(streams) > 1:
            raise ValueError(f"{path}: an .npy holds one stream; --streams {','.join(streams)} "
                             "needs video files")
        if frames.ndim != 4 or frames.shape[-1] != channels:
            raise ValueError(f"{path}: expected an array [T, H, W, {channels}], "
                             f"got shape {frames.shape}")
        for first in range(0, len(frames), chunk_frames):
            yield np.asarray(frames[first:first + chunk_frames], np.float32)
        return
    chunks = decoded_chunks(path, fps, chunk_frames, short_side)
    if "flow" in streams:
        yield from with_flow(path, chunks, streams, flow)
    else:
        yield from (to_network_range(chunk) for chunk in chunks)


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


def video_features(chunks, features: dict, *, stack: int, step: int, crops: int,
                   crop_size: int = CROP_SIZE) -> tuple[dict, np.ndarray, int]:
    """({stream: [windows, crops, D]}, window starts, frames) of a video given as
    consecutive chunks [T, H, W, C] in network range, the channels of `features`'
    streams side by side in its order ({"rgb": ..., "flow": ...}: 3 then 2)."""
    counted = {}
    channels, first = {}, 0
    for stream, runner in features.items():
        channels[stream] = slice(first, first + runner.in_channels)
        first += runner.in_channels
    batch_size = min(runner.batch_size for runner in features.values())
    # A batch's worth of windows at a time: the views of a whole video would hold
    # crops x stack frames per window (90 GB for 10 minutes in 10 crops).
    per_batch = max(1, batch_size // crops)
    starts, views = [], []
    out = {stream: [] for stream in features}

    def run(views):
        views = np.concatenate(views)
        for stream, runner in features.items():
            out[stream].append(runner(views[..., channels[stream]]))

    for start, window in stream_windows(chunks, stack, step, counted):
        if window.shape[-1] != first:
            raise ValueError(f"frames of {window.shape[-1]} channels for streams "
                             f"{', '.join(features)} of {first}")
        starts.append(start)
        views.append(crop_views(window, crop_size, crops))
        if len(views) == per_batch:
            run(views)
            views = []
    if views:
        run(views)
    if not starts:
        raise ValueError("no frames")
    return ({stream: np.concatenate(parts).reshape(len(starts), crops, -1)
             for stream, parts in out.items()}, np.asarray(starts), counted["frames"])


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


def extract_dataset(inputs, out_dir, features: dict, *, stack: int, step: int,
                    crops: int, fps: float, overwrite: bool = False,
                    crop_size: int = CROP_SIZE, short_side: int = RESIZE_SHORT_SIDE,
                    process_index: int = 0, process_count: int = 1,
                    chunk_frames: int = CHUNK_FRAMES,
                    flow: FlowOnDevices | None = None) -> Summary:
    """One `.npz` per video under `out_dir` (see the module's docstring) with the
    features of each stream of `features` ({"rgb": WindowFeatures, "flow": ...}, in
    that order; flow of videos by `flow`, default `FlowOnDevices()`); this process
    takes every `process_count`-th video from the `process_index`-th."""
    from tqdm import tqdm

    from i3d_jax.video import VideoDecodeError

    streams = tuple(features)
    if not streams or set(streams) - {"rgb", "flow"}:
        raise ValueError(f"streams must be rgb and/or flow, got {', '.join(streams) or 'none'}")
    out_dir = Path(out_dir)
    videos = expand_inputs(inputs)[process_index::process_count]
    if not videos:
        raise FileNotFoundError(f"no video or .npy among {', '.join(map(str, inputs))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if "flow" in streams and flow is None:
        flow = FlowOnDevices()
    channels = sum(runner.in_channels for runner in features.values())
    endpoint = next(iter(features.values())).endpoint
    made_with = {}
    for stream, runner in features.items():
        made_with[f"{stream}_weights"] = np.str_(runner.loaded.name)
        made_with[f"{stream}_params_sha256"] = np.str_(
            params_sha256(runner.loaded.variables["params"]))
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
            chunks = network_chunks(path, fps, streams, channels, chunk_frames=chunk_frames,
                                    short_side=short_side, flow=flow)
            out, starts, num_frames = video_features(
                prefetched(chunks), features, stack=stack, step=step, crops=crops,
                crop_size=crop_size)
        except (VideoDecodeError, ValueError, OSError) as error:
            progress.write(f"i3d-jax features: skipping {path}: {error}")
            summary.failed.append(f"{path}\t{error}")
            progress.update()
            continue
        length = min(stack, num_frames)
        record = {**out, "timestamps": window_timestamps(starts, length, fps),
                  "fps": np.float64(fps), "num_frames": np.int64(num_frames),
                  "stack": np.int64(stack), "step": np.int64(step),
                  "crops": np.int64(crops), "endpoint": np.str_(endpoint),
                  **made_with}
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
