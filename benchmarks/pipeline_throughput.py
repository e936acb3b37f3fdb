"""Training input pipeline throughput: clips per second per CPU core, against the
JPEG decode limit on the same frames.

Reads a prepared TFDS video dataset (by default `natural`: pans and zooms over a
photograph, stored as the Kinetics builder stores frames, built here by
`benchmarks.natural_frames` when missing; or `synthetic_motion/short_side_256`) and
times `i3d_jax.input_pipeline.train_dataset` at the paper's training clip, 64 frames
cropped to 224x224, with TF limited to `--threads` threads (tf.data's private pool and
TF's op pools), so clips/s / threads is the per-core figure. As the trainer, it first
keeps freed memory in the process for reuse (`i3d_jax.host_memory`; `--host_memory
system` leaves glibc's defaults, `keep system` times both).

The limit: the same frames' bytes decoded one after another on one thread by the call
the pipeline makes (`tf.io.decode_and_crop_jpeg` at a random 224x224 window; flow's
`tf.io.decode_png`), in a tight loop inside one tf.function, and by Pillow (libjpeg-turbo
too, whole frames) for comparison; a clip needs 64 such decodes per stream, which gives
`decode_limit_clips_per_second_per_core`. Each run measures it in its own process just
before the pipeline starts and again after it stops, and takes its ratio against their
mean: on a shared machine one process's speed moves by 20-30% against another's, so a
limit from another process is another machine. The same ratio on CPU time
(`ratio_to_decode_limit_cpu`: clips per CPU-second of the whole process, every thread
counted, against the decodes' own) holds where wall time moves with the host's load.
Each configuration runs `--repeats` times (3), the configurations in turn, and keeps the
median of each figure. Prints one JSON line per run and the kept figures; --json writes
the kept ones (with every run's), the machine and versions.

    PYTHONPATH=. python -m benchmarks.pipeline_throughput --data_dir /tmp/tfds \
        --threads 1 2 --modalities rgb rgb,flow \
        --json benchmarks/results/pipeline_throughput_cpu.json
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True, help="TFDS data dir (built there if missing)")
    parser.add_argument("--dataset", default="natural",
                        help="natural (default: benchmarks.natural_frames) or a TFDS name")
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="thread counts to time, one run each")
    parser.add_argument("--num_frames", type=int, default=64)
    parser.add_argument("--crop_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--modalities", nargs="+", default=["rgb"],
                        help="streams per run: rgb, flow or rgb,flow (several: one run each)")
    parser.add_argument("--dtype", default="uint8", choices=("uint8", "float32"),
                        help="clips as the trainer takes them (uint8, scaled on the device) "
                             "or in [-1, 1] on the host")
    parser.add_argument("--flip", default="device", choices=("device", "host"),
                        help="mirror clips in the jitted step, as the trainer does, or on "
                             "the host")
    parser.add_argument("--host_memory", nargs="+", default=["keep"], choices=("keep", "system"),
                        help="keep: freed memory kept for reuse, as the trainer sets it "
                             "(i3d_jax.host_memory); system: glibc's defaults (several: one "
                             "run each, for a before and after)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each configuration, taken in turn; the median of "
                             "each figure is kept")
    parser.add_argument("--json", help="write every run's figures to this file")
    args = parser.parse_args(argv)

    if (len(args.threads) > 1 or len(args.modalities) > 1 or len(args.host_memory) > 1
            or args.json or args.repeats > 1):
        # TF's thread pools are fixed at start: one process per run.
        import subprocess

        configurations = [(m, t, h) for m in args.modalities for t in args.threads
                          for h in args.host_memory]
        each_run = {}
        # In turn (a, b, a, b, ...), so that a slow spell of the machine hits all alike.
        for repeat in range(args.repeats):
            for modalities, threads, host_memory in configurations:
                command = [sys.executable, "-m", "benchmarks.pipeline_throughput",
                           *_forward(args), "--repeats", "1", "--threads", str(threads),
                           "--modalities", modalities, "--host_memory", host_memory]
                output = subprocess.run(command, check=True, capture_output=True, text=True,
                                        cwd=REPO).stdout
                run = json.loads(output.strip().splitlines()[-1])
                print(json.dumps({"repeat": repeat, **run}))
                each_run.setdefault((modalities, threads, host_memory), []).append(run)
        runs = [_median_run(each_run[key]) for key in configurations]
        for run in runs:
            print(json.dumps({k: run[k] for k in (
                "modalities", "threads", "host_memory", "clips_per_second",
                "clips_per_second_per_core",
                "decode_limit_clips_per_second_per_core", "ratio_to_decode_limit",
                "clips_per_cpu_second", "decode_limit_clips_per_cpu_second",
                "ratio_to_decode_limit_cpu")}))
        if args.json:
            _write_results(args.json, runs)
        return 0

    from benchmarks.machine import limit_tf_threads

    threads = args.threads[0]
    limit_tf_threads(threads)
    if args.host_memory[0] == "keep":
        from i3d_jax.host_memory import keep_freed_memory

        print(keep_freed_memory(), file=sys.stderr)
    from i3d_jax import input_pipeline

    modalities = tuple(args.modalities[0].split(","))
    builder = _builder(args.dataset, args.data_dir, modalities)
    # The limit first: a live pipeline's threads would run beside its loop (its buffers
    # refilling), adding to the process's CPU time.
    encoded = {m: encoded_frames(builder, m) for m in modalities}  # read once, timed twice
    before = decode_limit(encoded, args.crop_size, args.num_frames)
    iterator = input_pipeline.DatasetIterator(trainer_clips(
        builder, modalities=modalities, batch_size=args.batch_size, threads=threads,
        num_frames=args.num_frames, crop_size=args.crop_size, dtype=args.dtype,
        flip_on_device=args.flip == "device"))
    for _ in range(args.warmup):
        next(iterator)
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(args.batches):
        batch = next(iterator)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - start_cpu  # every thread of the process
    clips_per_second = args.batches * args.batch_size / seconds
    shape = {k: list(v.shape) for k, v in batch.items()}
    batch_bytes = int(sum(v.nbytes for k, v in batch.items() if k in modalities))
    output_dtype = str(batch["rgb" if "rgb" in batch else "flow"].dtype)
    del iterator, batch  # its threads stop before the limit is measured again
    gc.collect()
    after = decode_limit(encoded, args.crop_size, args.num_frames)
    limit = {name: (before[name] + after[name]) / 2
             for name in ("clips_per_second", "clips_per_cpu_second")}
    print(json.dumps({
        "dataset": builder.info.full_name,
        "clip": f"{args.num_frames}x{args.crop_size}x{args.crop_size}",
        "modalities": args.modalities[0],
        "threads": threads,
        "host_memory": args.host_memory[0],
        "clips_per_second": round(clips_per_second, 2),
        "clips_per_second_per_core": round(clips_per_second / threads, 2),
        "decode_limit_clips_per_second_per_core": round(limit["clips_per_second"], 2),
        "ratio_to_decode_limit": round(clips_per_second / threads / limit["clips_per_second"], 3),
        # The same on CPU time: what the process spent, all its threads, against what
        # the decodes alone take; steady where wall time moves with the host's load.
        "clips_per_cpu_second": round(args.batches * args.batch_size / cpu_seconds, 2),
        "decode_limit_clips_per_cpu_second": round(limit["clips_per_cpu_second"], 2),
        "ratio_to_decode_limit_cpu": round(args.batches * args.batch_size / cpu_seconds
                                           / limit["clips_per_cpu_second"], 3),
        "decode_limit_before": before,
        "decode_limit_after": after,
        "batch_size": args.batch_size,
        "timed_batches": args.batches,
        "batch_shape": shape,
        # What goes to the devices each step: the clips, as they leave the pipeline.
        "batch_bytes": batch_bytes,
        "output_dtype": output_dtype,
        "flip": args.flip,
    }))
    return 0


def trainer_clips(builder, *, modalities=("rgb",), batch_size: int, threads: int, seed: int = 0,
                  num_frames: int = 64, crop_size: int = 224, dtype: str = "uint8",
                  flip_on_device: bool = True):
    """`input_pipeline.train_dataset` as the trainer asks for it (`train.clip_options`:
    uint8, mirrored on the device), one process, TF's pool at `threads`."""
    from i3d_jax import input_pipeline

    options = input_pipeline.ClipOptions(num_frames=num_frames, crop_size=crop_size,
                                         modalities=tuple(modalities), dtype=dtype,
                                         flip_on_device=flip_on_device)
    return input_pipeline.train_dataset(builder, batch_size=batch_size, options=options,
                                        seed=seed, process_index=0, process_count=1,
                                        threads=threads)


MEDIAN_FIGURES = ("clips_per_second", "clips_per_second_per_core",
                  "decode_limit_clips_per_second_per_core", "ratio_to_decode_limit",
                  "clips_per_cpu_second", "decode_limit_clips_per_cpu_second",
                  "ratio_to_decode_limit_cpu")


def _median_run(runs: list[dict]) -> dict:
    """One configuration's runs -> the median of each figure, with every run's."""
    import statistics

    # The rest (the decode limit's details, the batch) from the first run.
    kept = {k: v for k, v in runs[0].items() if k not in MEDIAN_FIGURES}
    for name in MEDIAN_FIGURES:
        kept[name] = round(statistics.median(run[name] for run in runs), 3)
        kept[name + "_each_run"] = [run[name] for run in runs]
    return kept


def _builder(dataset: str, data_dir: str, modalities):
    from i3d_jax import datasets

    if dataset == "natural":
        from benchmarks.natural_frames import build

        return build(data_dir, "flow" if "flow" in modalities else "rgb")
    builder = datasets.builder(dataset, data_dir=data_dir)
    if not builder.is_prepared():
        print(f"building {dataset} in {data_dir} ...", file=sys.stderr)
        builder.download_and_prepare()
    return builder


def encoded_frames(builder, modality: str, count: int = 256) -> list[bytes]:
    """The stored bytes of `count` frames (JPEG for rgb, PNG for flow)."""
    import tensorflow_datasets as tfds

    feature = {"rgb": "video", "flow": "flow"}[modality]
    dataset = builder.as_dataset(split="train", decoders={feature: tfds.decode.SkipDecoding()})
    frames = []
    for example in dataset:
        frames += list(example[feature].numpy())
        if len(frames) >= count:
            break
    return frames[:count]


def decode_limit(encoded: dict, crop_size: int, num_frames: int, repeats: int = 3) -> dict:
    """Frames/s of the pipeline's own decode call on one thread over `encoded`
    {modality: stored frames} (`encoded_frames`), in a loop inside one tf.function (no
    Python between frames), per stream, and the clips/s per core they allow; Pillow's
    whole-frame JPEG decode of the same bytes for comparison."""
    import io

    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from benchmarks.machine import tf_decode_rate

    result, seconds_per_clip, cpu_seconds_per_clip = {}, 0.0, 0.0
    for modality, frames in encoded.items():
        if modality == "rgb":
            height, width = tf.io.extract_jpeg_shape(frames[0]).numpy()[:2]
        else:
            height, width = tf.io.decode_png(frames[0], channels=0).shape[:2]
        rng = np.random.default_rng(0)
        windows = np.stack([rng.integers(0, height - crop_size + 1, len(frames)),
                            rng.integers(0, width - crop_size + 1, len(frames)),
                            np.full(len(frames), crop_size),
                            np.full(len(frames), crop_size)], 1).astype(np.int32)
        if modality == "rgb":
            frames_per_second, frames_per_cpu_second = tf_decode_rate(
                lambda b, w: tf.io.decode_and_crop_jpeg(b, w, channels=3),
                list(zip(frames, windows)), repeats, cpu=True)
        else:
            frames_per_second, frames_per_cpu_second = tf_decode_rate(
                lambda b: tf.io.decode_png(b, channels=0), frames, repeats, cpu=True)
        seconds_per_clip += num_frames / frames_per_second
        cpu_seconds_per_clip += num_frames / frames_per_cpu_second
        entry = {"frames": len(frames), "frame_size": [int(height), int(width)],
                 "mean_bytes_per_frame": round(float(np.mean([len(f) for f in frames]))),
                 "call": ("tf.io.decode_and_crop_jpeg (224x224 window)" if modality == "rgb"
                          else "tf.io.decode_png (whole frame)"),
                 "frames_per_second": round(frames_per_second, 1),
                 "frames_per_cpu_second": round(frames_per_cpu_second, 1)}
        if modality == "rgb":
            start = time.perf_counter()
            for data in frames:
                np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            entry["pillow_whole_frame_frames_per_second"] = round(
                len(frames) / (time.perf_counter() - start), 1)
        result[modality] = entry
    result["clips_per_second"] = 1.0 / seconds_per_clip
    result["clips_per_cpu_second"] = 1.0 / cpu_seconds_per_clip
    return result


def _write_results(path, runs) -> None:
    import numpy
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from benchmarks.machine import machine_record
    from i3d_jax.atomic_file import write_atomically

    results = {
        "benchmark": "training input pipeline (i3d_jax.input_pipeline.train_dataset)",
        "machine": machine_record(),
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "tensorflow_datasets": tfds.__version__, "numpy": numpy.__version__},
        "runs": runs,
    }
    write_atomically(path, lambda f: f.write((json.dumps(results, indent=2) + "\n").encode()))


def _forward(args) -> list[str]:
    return ["--data_dir", args.data_dir, "--dataset", args.dataset,
            "--num_frames", str(args.num_frames), "--crop_size", str(args.crop_size),
            "--batch_size", str(args.batch_size), "--batches", str(args.batches),
            "--warmup", str(args.warmup), "--dtype", args.dtype, "--flip", args.flip]


if __name__ == "__main__":
    sys.exit(main())
