"""Grain over ArrayRecord against our tf.data reader over TFRecord: the same RGB training
clips from the same natural frames, clips/s per core, determinism, iterator checkpoints.

Ours: `i3d_jax.input_pipeline.train_dataset` over the TFRecord copy of the natural-frames
set (`benchmarks.natural_frames`), TF limited to N threads, as in
`benchmarks.pipeline_throughput`. Grain: `tfds.data_source` over an ArrayRecord copy of
the same set (built by TFDS from the same clips, `file_format="array_record"`; the check
`same_frames` compares every stored JPEG of the two copies), then

    grain.MapDataset.source(frames).seed(seed).shuffle().repeat()
        .random_map(RandomClip(64, 224))   # start, crop, flip flag; Pillow decode
        .batch(8)  ->  .to_iter_dataset(ReadOptions(num_threads=N))       # threads
                   or .to_iter_dataset(...).mp_prefetch(num_workers=N)    # processes

`RandomClip` draws every choice from the generator Grain gives `random_map`, which is
Philox keyed by the seed at the example's global position: the stream is a function of
(seed, position) alone. No TensorFlow op runs in the Grain path (TFDS itself imports
TensorFlow to describe a `Video` feature; `--source array_record` reads the same records
without TFDS's builders and never imports it).

Each timed run is its own process (TF fixes its thread pools at start): `--batches` timed
batches after `--warmup`, clips/s over wall time / N, and clips per CPU-second (the
process and its workers). The checks (one more process) give determinism (two iterators
of one seed yield the same first batches), checkpointing (save or get_state, then the
resumed iterator of a fresh pipeline must give the exact continuation; the state's size),
and `process_share`, a process-count-free order. One JSON with the machine and versions:

    PYTHONPATH=. python -m benchmarks.grain_clips --data_dir /tmp/nat_tfds_ar \
        --json benchmarks/results/grain_clips_cpu.json
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grain
import numpy as np
import tensorflow_datasets as tfds  # (imports TensorFlow only when something needs it)
from PIL import Image
from tensorflow_datasets.proto import tf_example_pb2

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.machine import limit_tf_threads, time_calls  # noqa: E402

DATASET = "video_folder/rgb"
VERSION_DIR = Path("video_folder") / "rgb" / "1.0.0"


# --------------------------------------------------------------------------
# The ArrayRecord copy of the natural frames


def tfrecord_builder(tfrecord_data_dir):
    """The natural-frames rgb set as our reader reads it (TFRecord; built when missing)."""
    from benchmarks.natural_frames import build

    return build(Path(tfrecord_data_dir), "rgb")


def build_array_record(data_dir, tfrecord_data_dir) -> Path:
    """The same set written by TFDS as ArrayRecord in `data_dir` (built when missing),
    from the clips the TFRecord copy was built from. Returns its version directory."""
    from benchmarks.natural_frames import SETS, write_clips
    from i3d_jax import datasets

    tfrecord_builder(tfrecord_data_dir)
    builder = datasets.builder(DATASET, data_dir=str(data_dir), file_format="array_record")
    if builder.is_prepared():
        formats = {f.value for f in builder.info.available_file_formats()}
        if "array_record" not in formats:
            raise SystemExit(f"{builder.data_dir} holds {DATASET} as {sorted(formats)}, not "
                             f"array_record: give another --data_dir")
    else:
        manual_dir = Path(tfrecord_data_dir) / "natural_frames_clips_rgb"
        if not manual_dir.exists():  # the same clips again (same seed)
            manual_dir = Path(data_dir) / "natural_frames_clips_rgb"
            if not manual_dir.exists():
                write_clips(manual_dir, *SETS["rgb"])
        print(f"building {DATASET} as ArrayRecord in {data_dir} ...", file=sys.stderr)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return Path(builder.data_dir)


# --------------------------------------------------------------------------
# Sources: encoded frames by random access


class KeepEncoded(tfds.decode.SkipDecoding):
    """`SkipDecoding` that works in `tfds.data_source`: TFDS 4.9.10's own fails on a
    `Video` feature there (its NumPy path asks for `decode_batch_example_np`)."""

    def decode_batch_example_np(self, serialized):
        return serialized


def tfds_source(data_dir):
    """`tfds.data_source` over the ArrayRecord copy, frames left encoded: each element
    {"video": object array [T] of JPEG bytes, "label": int, ...}."""
    return tfds.data_source(DATASET, data_dir=str(data_dir), split="train", download=False,
                            decoders={"video": KeepEncoded()})


class ExampleRecords:
    """The same records without TFDS's builders and features: Grain's ArrayRecord source
    and the tf.train.Example proto (TFDS's generated copy, which needs no TensorFlow);
    elements as `tfds_source`'s ("video" and "label" only)."""

    def __init__(self, data_dir):
        paths = sorted(glob.glob(str(Path(data_dir) / VERSION_DIR / "*.array_record-*")))
        if not paths:
            raise FileNotFoundError(f"no ArrayRecord files under {Path(data_dir) / VERSION_DIR}")
        self._records = grain.sources.ArrayRecordDataSource(paths)

    def __len__(self):
        return len(self._records)

    def __getitem__(self, index):
        feature = tf_example_pb2.Example.FromString(self._records[index]).features.feature
        frames = np.empty(len(feature["video"].bytes_list.value), dtype=object)
        frames[:] = list(feature["video"].bytes_list.value)
        return {"video": frames, "label": int(feature["label"].int64_list.value[0])}


def open_source(kind: str, data_dir):
    return tfds_source(data_dir) if kind == "tfds" else ExampleRecords(data_dir)


# --------------------------------------------------------------------------
# The clip reader on Grain


def decode_crop(jpeg: bytes, top: int, left: int, size: int) -> Image.Image:
    """The `size` square at (top, left) of a JPEG frame as an RGB image: Pillow
    (libjpeg-turbo) decodes the whole frame and `crop` copies the window out before any
    array is made (cheaper than slicing a whole-frame array); the caller copies it once
    into its clip (`clip[t] = image`)."""
    image = Image.open(io.BytesIO(jpeg))
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image.crop((left, top, left + size, top + size))


class RandomClip(grain.transforms.RandomMap):
    """One training clip, as `input_pipeline.train_clip` makes it for the trainer: a
    random start, `num_frames` consecutive frames (short videos loop), a random
    `crop_size` square; uint8 [T, S, S, 3], an int32 label and the flip (half of the
    time) that the train step applies on the device (`ClipOptions.flip_on_device`)."""

    def __init__(self, num_frames: int = 64, crop_size: int = 224, flip: bool = True):
        self.num_frames, self.crop_size, self.flip = num_frames, crop_size, flip

    def random_map(self, example, rng: np.random.Generator):
        frames = example["video"]
        count, size = len(frames), self.crop_size
        start = int(rng.integers(0, max(count - self.num_frames, 0) + 1))
        width, height = Image.open(io.BytesIO(frames[start])).size  # header only
        if min(width, height) < size:
            raise ValueError(f"frames of {width}x{height} are smaller than the crop {size}")
        top = int(rng.integers(0, height - size + 1))
        left = int(rng.integers(0, width - size + 1))
        flipped = self.flip and rng.random() < 0.5
        clip = np.empty((self.num_frames, size, size, 3), np.uint8)
        for t in range(self.num_frames):
            clip[t] = decode_crop(frames[(start + t) % count], top, left, size)
        return {"rgb": clip, "label": np.int32(example["label"]), "flip": np.bool_(flipped)}


def clip_dataset(source, *, seed: int, num_frames: int = 64, crop_size: int = 224,
                 flip: bool = True):
    """The global stream of clips, endless: clip i comes from the example at position i
    of the seeded, per-epoch reshuffled order, its choices from (seed, i) alone."""
    return (grain.MapDataset.source(source).seed(seed).shuffle().repeat()
            .random_map(RandomClip(num_frames, crop_size, flip)))


def process_share(global_dataset, process_index: int, process_count: int,
                  per_process_batch: int):
    """Process p's batches of a global order that no process count changes: global batch
    s is clips [s*n*B, (s+1)*n*B) of `global_dataset` (n processes, B per process), and
    process p takes its rows [p*B, (p+1)*B). Random access makes this a slice: batches of
    B, every n-th from the p-th. Reading stays local to each process's rows."""
    return global_dataset.batch(per_process_batch, drop_remainder=True)[
        process_index::process_count]


def grain_batches(source, *, batch_size: int, seed: int, parallelism: str, cores: int,
                  num_frames: int = 64, crop_size: int = 224):
    """A Grain iterator of uint8 batches, parallel over `cores` threads (ReadOptions) or
    worker processes (mp_prefetch)."""
    _absl_flags_parsed()
    batches = process_share(clip_dataset(source, seed=seed, num_frames=num_frames,
                                         crop_size=crop_size), 0, 1, batch_size)
    if parallelism == "threads":
        return iter(batches.to_iter_dataset(
            grain.ReadOptions(num_threads=cores, prefetch_buffer_size=2 * cores)))
    # Each worker builds whole batches in its own main thread (no reader threads).
    dataset = batches.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    return iter(dataset.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=cores, per_worker_buffer_size=2)))


def _absl_flags_parsed():
    """Grain reads its options from absl flags, which only an absl program parses: a plain
    script's mp_prefetch fails with UnparsedFlagAccessError. Defaults are what we want."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS([sys.argv[0]], known_only=True)


# --------------------------------------------------------------------------
# Our reader


def _our_iterator(args, threads, seed=0):
    from benchmarks.pipeline_throughput import trainer_clips
    from i3d_jax import input_pipeline

    return input_pipeline.DatasetIterator(trainer_clips(
        tfrecord_builder(args.tfrecord_data_dir), batch_size=args.batch_size, seed=seed,
        threads=threads, num_frames=args.num_frames, crop_size=args.crop_size))


# --------------------------------------------------------------------------
# Timing (one process a run)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its live child processes."""
    try:
        import psutil
    except ImportError:
        times = os.times()
        return times.user + times.system
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def time_batches(iterator, batches: int, warmup: int, batch_size: int) -> dict:
    for _ in range(warmup):
        next(iterator)
    cpu, start = cpu_seconds(), time.perf_counter()
    for _ in range(batches):
        batch = next(iterator)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    clips = batches * batch_size
    return {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
            "clips_per_second": round(clips / seconds, 2),
            "clips_per_cpu_second": round(clips / cpu, 2) if cpu > 0 else None,
            "batch_shape": list(batch["rgb"].shape), "dtype": str(batch["rgb"].dtype)}


def run_ours(args) -> dict:
    limit_tf_threads(args.cores)
    iterator = _our_iterator(args, args.cores)
    result = {"reader": "tf.data (ours)", "parallelism": "threads", "cores": args.cores,
              **time_batches(iterator, args.batches, args.warmup, args.batch_size)}
    if args.cores == 1:
        result["decode"] = decode_rates(args)
    return result


def run_grain(args) -> dict:
    source = open_source(args.source, args.data_dir)
    iterator = grain_batches(source, batch_size=args.batch_size, seed=0,
                             parallelism=args.parallelism, cores=args.cores,
                             num_frames=args.num_frames, crop_size=args.crop_size)
    try:
        timing = time_batches(iterator, args.batches, args.warmup, args.batch_size)
    finally:
        if hasattr(iterator, "close"):
            iterator.close()
    return {"reader": f"grain ({args.source} source)", "parallelism": args.parallelism,
            "cores": args.cores, **timing,
            "tensorflow_imported": "tensorflow" in sys.modules}


def decode_rates(args) -> dict:
    """Frames/s on one thread of the two decoders on the same 256 stored frames: TF's
    decode_and_crop_jpeg (ours; `pipeline_throughput.decode_limit`) and Pillow's
    decode + crop (Grain's, `decode_crop`), and the clips/s per core each allows."""
    from benchmarks.pipeline_throughput import decode_limit, encoded_frames

    builder = tfrecord_builder(args.tfrecord_data_dir)
    frames = encoded_frames(builder, "rgb")
    limit = decode_limit({"rgb": frames}, args.crop_size, args.num_frames)
    height, width = limit["rgb"]["frame_size"]
    rng = np.random.default_rng(0)
    windows = list(zip(rng.integers(0, height - args.crop_size + 1, len(frames)),
                       rng.integers(0, width - args.crop_size + 1, len(frames))))
    pillow = len(frames) / min(time_calls(lambda: [
        np.asarray(decode_crop(data, int(top), int(left), args.crop_size))
        for data, (top, left) in zip(frames, windows)], 3))
    tf_rate = limit["rgb"]["frames_per_second"]
    other = {}
    try:  # for reference: OpenCV's whole-frame decode (not a dependency of the package)
        import cv2

        cv2.setNumThreads(1)
        best = min(time_calls(lambda: [cv2.imdecode(np.frombuffer(data, np.uint8),
                                                    cv2.IMREAD_COLOR) for data in frames], 3))
        other["opencv_whole_frame_frames_per_second"] = round(len(frames) / best, 1)
    except ImportError:
        pass
    return {**other, "frames": len(frames), "frame_size": [height, width],
            "mean_bytes_per_frame": limit["rgb"]["mean_bytes_per_frame"],
            "tf_decode_and_crop_frames_per_second": tf_rate,
            "pillow_decode_crop_frames_per_second": round(pillow, 1),
            "pillow_whole_frame_convert_frames_per_second":
                limit["rgb"]["pillow_whole_frame_frames_per_second"],
            "tf_limit_clips_per_second_per_core": round(tf_rate / args.num_frames, 2),
            "pillow_limit_clips_per_second_per_core": round(pillow / args.num_frames, 2)}


# --------------------------------------------------------------------------
# Checks (one process)


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


def _take(iterator, count: int) -> list:
    return [next(iterator) for _ in range(count)]


def _close(iterator):
    if hasattr(iterator, "close"):
        iterator.close()


def check_ours(args, count: int) -> dict:
    """Determinism and checkpointing of `DatasetIterator` (TF on `args.cores` threads)."""
    import tensorflow as tf

    first = _take(_our_iterator(args, args.cores), count)
    second = _take(_our_iterator(args, args.cores), count)
    single = _take(_our_iterator(args, 1), count)  # the pipeline's pool of 1 thread
    result = {"deterministic": _same(first, second),
              "same_stream_1_thread": _same(first, single),
              "how": "DatasetIterator.save(prefix) / .restore(prefix): TF checkpoint files"}
    iterator = _our_iterator(args, args.cores)
    _take(iterator, 1)
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "input", "step_1")
        start = time.perf_counter()
        iterator.save(prefix)
        result["save_seconds"] = round(time.perf_counter() - start, 3)
        result["state_bytes"] = sum(os.path.getsize(p) for p in glob.glob(prefix + "*"))
        expected = _take(iterator, count)
        try:
            resumed = _our_iterator(args, args.cores)
            resumed.restore(prefix)
            result["resume_exact"] = _same(expected, _take(resumed, count))
        except (tf.errors.OpError, AssertionError) as e:  # reported: the rest still stands
            result["resume_exact"] = False
            result["resume_error"] = f"{type(e).__name__}: {str(e)[:600]}"
    return result


def check_grain(args, count: int) -> dict:
    """Determinism (also across parallelism) and get_state/set_state of both iterators."""
    source = open_source(args.source, args.data_dir)

    def iterator(parallelism, cores=args.cores):
        return grain_batches(source, batch_size=args.batch_size, seed=0,
                             parallelism=parallelism, cores=cores,
                             num_frames=args.num_frames, crop_size=args.crop_size)

    result = {}
    streams = {}
    for parallelism in ("threads", "processes"):
        runs = []
        for _ in range(2):
            it = iterator(parallelism)
            runs.append(_take(it, count))
            _close(it)
        streams[parallelism] = runs[0]
        it = iterator(parallelism)
        _take(it, 1)
        state = json.dumps(it.get_state())  # what a checkpoint would store
        expected = _take(it, count)
        _close(it)
        resumed = iterator(parallelism)  # a fresh pipeline, as after a restart
        resumed.set_state(json.loads(state))
        continued = _take(resumed, count)
        _close(resumed)
        result[parallelism] = {
            "deterministic": _same(runs[0], runs[1]), "resume_exact": _same(expected, continued),
            "state_bytes": len(state.encode()), "state": json.loads(state),
            "how": "iterator.get_state() -> JSON; fresh iterator.set_state(state)"}
    single = iterator("threads", cores=1)
    result["same_stream_threads_processes_and_1_thread"] = (
        _same(streams["threads"], streams["processes"])
        and _same(streams["threads"], _take(single, count)))
    _close(single)
    return result


def check_process_share(args, steps: int = 2, global_batch: int = 4) -> dict:
    """n=1 with the global batch against n=2 processes' batches concatenated, by random
    access (no iterator), for `steps` global batches."""
    dataset = clip_dataset(open_source(args.source, args.data_dir), seed=0,
                           num_frames=args.num_frames, crop_size=args.crop_size)
    alone = process_share(dataset, 0, 1, global_batch)
    halves = [process_share(dataset, p, 2, global_batch // 2) for p in range(2)]
    same = True
    for step in range(steps):
        whole = alone[step]
        joined = {k: np.concatenate([halves[0][step][k], halves[1][step][k]]) for k in whole}
        same &= all(np.array_equal(whole[k], joined[k]) for k in whole)
    return {"global_batches_identical_n1_n2": bool(same), "global_batch": global_batch,
            "steps": steps}


def check_same_frames(args) -> dict:
    """Every stored frame of the TFRecord copy equals the ArrayRecord copy's (by video)."""
    def digest(frames):
        h = hashlib.sha256()
        for f in frames:
            h.update(f)
        return h.hexdigest()

    ours = {}
    builder = tfrecord_builder(args.tfrecord_data_dir)
    for ex in builder.as_dataset(split="train", decoders={"video": tfds.decode.SkipDecoding()}):
        ours[ex["video_id"].numpy().decode()] = digest(ex["video"].numpy())
    source = tfds_source(args.data_dir)
    theirs = {source[i]["video_id"].decode(): digest(source[i]["video"])
              for i in range(len(source))}
    return {"same_frames": ours == theirs, "videos": len(ours),
            "frames_per_video": len(source[0]["video"])}


def check_pixels(args) -> dict:
    """Pillow's decode of a window against TF's decode_and_crop_jpeg of it (8 frames)."""
    import tensorflow as tf

    frames = tfds_source(args.data_dir)[0]["video"][:8]
    diff = [np.abs(np.asarray(decode_crop(f, 16, 40, args.crop_size), np.int16)
                   - tf.io.decode_and_crop_jpeg(f, [16, 40, args.crop_size, args.crop_size],
                                                channels=3).numpy()) for f in frames]
    return {"max_abs_difference": int(max(d.max() for d in diff)),
            "mean_abs_difference": round(float(np.mean(diff)), 4)}


def run_checks(args) -> dict:
    limit_tf_threads(args.cores)
    count = args.check_batches
    result = {"batches_compared": count, "cores": args.cores,
              "tf.data (ours)": check_ours(args, count),
              "grain": check_grain(args, count),
              "process_share": check_process_share(args),
              "frames": check_same_frames(args),
              "pillow_vs_tf_pixels": check_pixels(args)}
    # A source that needs no TFDS imports no TensorFlow (checked in a clean process).
    code = ("import sys; from benchmarks.grain_clips import ExampleRecords, RandomClip; "
            f"s = ExampleRecords({str(args.data_dir)!r}); import numpy as np; "
            "RandomClip(8, 224).random_map(s[0], np.random.default_rng(0)); "
            "print('tensorflow' in sys.modules)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, check=True).stdout.split()
    result["tensorflow_imported"] = {"tfds.data_source": _imports_tf_via_tfds(args.data_dir),
                                     "array_record source": output[-1] == "True"}
    return result


def _imports_tf_via_tfds(data_dir) -> bool:
    code = ("import sys; from benchmarks.grain_clips import tfds_source; "
            f"s = tfds_source({str(data_dir)!r}); s[0]; print('tensorflow' in sys.modules)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, check=True).stdout.split()
    return output[-1] == "True"


# --------------------------------------------------------------------------
# Driver


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from PIL import features

    out = {"python": platform.python_version()}
    for name in ("grain", "array_record", "tensorflow_cpu", "tensorflow", "tensorflow_datasets",
                 "numpy", "pillow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    out["libjpeg_turbo"] = features.version("libjpeg_turbo")
    return out


def _child(args, mode: str, **extra) -> dict:
    command = [sys.executable, "-m", "benchmarks.grain_clips", "--_mode", mode,
               "--data_dir", str(args.data_dir), "--tfrecord_data_dir", str(args.tfrecord_data_dir),
               "--source", args.source, "--num_frames", str(args.num_frames),
               "--crop_size", str(args.crop_size), "--batch_size", str(args.batch_size),
               "--batches", str(args.batches), "--warmup", str(args.warmup),
               "--check_batches", str(args.check_batches)]
    for key, value in extra.items():
        command += [f"--{key}", str(value)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> dict:
    """Clips/s per core of each reader and core count, the best of its repeats (a
    ceiling: on a shared machine a run only loses to what else runs), and Grain's best
    configuration over ours."""
    table, grain_best, ours = {}, {}, {}
    for run in runs:
        name = "tf.data (ours)" if run["reader"].startswith("tf.data") else \
            f"grain {run['parallelism']}"
        per_core = round(run["clips_per_second"] / run["cores"], 2)
        run["clips_per_second_per_core"] = per_core
        row = table.setdefault(name, {})
        row[str(run["cores"])] = max(row.get(str(run["cores"]), 0.0), per_core)
    for name, row in table.items():
        for cores, per_core in row.items():
            if name.startswith("grain"):
                grain_best[cores] = max(grain_best.get(cores, 0.0), per_core)
            else:
                ours[cores] = per_core
    ratio = {c: round(grain_best[c] / ours[c], 3) for c in ours if c in grain_best}
    return {"clips_per_second_per_core": table,
            "best_grain_over_ours": ratio,
            "grain_wins": bool(ratio) and all(r > 1.0 for r in ratio.values())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, required=True,
                        help="TFDS data dir of the ArrayRecord copy (built there if missing)")
    parser.add_argument("--tfrecord_data_dir", type=Path,
                        help="TFDS data dir of the TFRecord copy our reader reads (built there "
                             "if missing; default DATA_DIR/tfrecord)")
    parser.add_argument("--cores", type=int, nargs="+", default=[1, 2],
                        help="threads / worker processes per run")
    parser.add_argument("--parallelism", nargs="+", default=["threads", "processes"],
                        choices=("threads", "processes"), help="Grain's: ReadOptions threads, "
                        "mp_prefetch worker processes")
    parser.add_argument("--source", default="tfds", choices=("tfds", "array_record"),
                        help="Grain's source: tfds.data_source, or the ArrayRecord files read "
                             "without TFDS's builders (no TensorFlow import)")
    parser.add_argument("--num_frames", type=int, default=64)
    parser.add_argument("--crop_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of every configuration, interleaved; the summary takes "
                             "each one's best")
    parser.add_argument("--check_batches", type=int, default=2,
                        help="batches compared by the determinism and checkpoint checks")
    parser.add_argument("--no_checks", action="store_true", help="timings only")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--_mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tfrecord_data_dir is None:
        args.tfrecord_data_dir = args.data_dir / "tfrecord"

    if args._mode:  # one run, in its own process
        args.cores = args.cores[0]
        args.parallelism = args.parallelism[0]
        result = {"ours": run_ours, "grain": run_grain, "checks": run_checks}[args._mode](args)
        print(json.dumps(result))
        return 0

    started, load = time.perf_counter(), _load_average()
    build_array_record(args.data_dir, args.tfrecord_data_dir)
    runs, decodes = [], []
    plan = [(cores, mode, parallelism) for cores in args.cores
            for mode, parallelism in [("ours", "threads")]
            + [("grain", p) for p in args.parallelism]]
    for repeat in range(args.repeats):  # interleaved, so drift hits every reader alike
        for cores, mode, parallelism in plan:
            runs.append({"repeat": repeat, **_child(args, mode, cores=cores,
                                                    parallelism=parallelism)})
            if "decode" in runs[-1]:
                decodes.append(runs[-1].pop("decode"))
            print(json.dumps(runs[-1]), flush=True)
    decode = _best_decode(decodes)
    results = {
        "benchmark": "RGB training clips: Grain over ArrayRecord (Pillow decode) against "
                     "i3d_jax.input_pipeline.train_dataset (tf.data over TFRecord)",
        "machine": {**_machine(), "load_average_at_start": load,
                    "load_average_at_end": _load_average()},
        "versions": versions(),
        "settings": {"clip": f"{args.num_frames}x{args.crop_size}x{args.crop_size}",
                     "batch_size": args.batch_size, "dtype": "uint8", "timed_batches": args.batches,
                     "warmup_batches": args.warmup, "repeats": args.repeats,
                     "grain_source": args.source,
                     "data_dir": str(args.data_dir),
                     "tfrecord_data_dir": str(args.tfrecord_data_dir)},
        "runs": runs,
        "decode": decode,
        "summary": summarise(runs),
    }
    print(json.dumps({"decode": decode}), flush=True)
    print(json.dumps({"summary": results["summary"]}), flush=True)
    if not args.no_checks:
        checks = _child(args, "checks", cores=max(args.cores))
        results["checks"] = checks
        print(json.dumps({"checks": {k: v for k, v in checks.items()}}, default=str), flush=True)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        from i3d_jax.atomic_file import write_atomically

        write_atomically(args.json,
                         lambda f: f.write((json.dumps(results, indent=2) + "\n").encode()))
    return 0


def _best_decode(decodes: list[dict]) -> dict | None:
    """Each decoder's fastest rate over the runs that measured it (a ceiling, as
    `pipeline_throughput` takes its decode limit)."""
    if not decodes:
        return None
    best = dict(decodes[0])
    for decode in decodes[1:]:
        for key, value in decode.items():
            if key.endswith(("_per_second", "_per_core")):
                best[key] = max(best[key], value)
    best["runs"] = len(decodes)
    return best


def _machine() -> dict:
    from benchmarks.machine import machine_record

    return machine_record()


def _load_average():
    """1, 5 and 15 minute load averages: what else ran on the machine."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
