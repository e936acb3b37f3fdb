"""Training input pipeline throughput: clips per second per CPU core.

Reads a prepared TFDS video dataset (by default the generated
`synthetic_motion/short_side_256`: 256x320 frames, built here when missing)
and times `i3d_jax.input_pipeline.train_dataset` at the paper's training
clip, 64 frames cropped to 224x224, with TF limited to `--threads` threads
(tf.data's private pool and TF's op pools), so clips/s / threads is the
per-core figure. Prints one JSON line per thread count; --json writes them
all, with the machine and versions.

    PYTHONPATH=. python benchmarks/pipeline_throughput.py --data_dir /tmp/tfds \
        --threads 1 2 --json benchmarks/results/pipeline_throughput_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True, help="TFDS data dir (built there if missing)")
    parser.add_argument("--dataset", default="synthetic_motion/short_side_256")
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="thread counts to time, one run each")
    parser.add_argument("--num_frames", type=int, default=64)
    parser.add_argument("--crop_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--modalities", nargs="+", default=["rgb"],
                        help="streams per run: rgb, flow or rgb,flow (several: one run each)")
    parser.add_argument("--batches", type=int, default=12, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--json", help="write every run's figures to this file")
    args = parser.parse_args(argv)

    if len(args.threads) > 1 or len(args.modalities) > 1 or args.json:
        # TF's thread pools are fixed at start: one process per run.
        import subprocess

        runs = []
        for modalities, threads in [(m, t) for m in args.modalities for t in args.threads]:
            command = [sys.executable, __file__, *_forward(args), "--threads", str(threads),
                       "--modalities", modalities]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(output.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]))
        if args.json:
            _write_results(args.json, runs)
        return 0

    threads = args.threads[0]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from i3d_jax import datasets, input_pipeline

    builder = datasets.builder(args.dataset, data_dir=args.data_dir)
    if not builder.is_prepared():
        print(f"building {args.dataset} in {args.data_dir} ...", file=sys.stderr)
        builder.download_and_prepare()
    options = input_pipeline.ClipOptions(num_frames=args.num_frames, crop_size=args.crop_size,
                                         modalities=tuple(args.modalities[0].split(",")))
    dataset = input_pipeline.train_dataset(builder, batch_size=args.batch_size, options=options,
                                           seed=0, process_index=0, process_count=1,
                                           threads=threads)
    iterator = input_pipeline.DatasetIterator(dataset)
    for _ in range(args.warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(args.batches):
        batch = next(iterator)
    seconds = time.perf_counter() - start
    clips_per_second = args.batches * args.batch_size / seconds
    print(json.dumps({
        "dataset": builder.info.full_name,
        "clip": f"{args.num_frames}x{args.crop_size}x{args.crop_size}",
        "modalities": args.modalities[0],
        "threads": threads,
        "clips_per_second": round(clips_per_second, 2),
        "clips_per_second_per_core": round(clips_per_second / threads, 2),
        "batch_size": args.batch_size,
        "timed_batches": args.batches,
        "batch_shape": {k: list(v.shape) for k, v in batch.items()},
        "output_dtype": str(batch["rgb" if "rgb" in batch else "flow"].dtype),
    }))
    return 0


def _write_results(path, runs) -> None:
    import numpy
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from i3d_jax.atomic_file import write_atomically

    results = {
        "benchmark": "training input pipeline (i3d_jax.input_pipeline.train_dataset)",
        "machine": {"cpu": _cpu_name(), "cores_available": len(os.sched_getaffinity(0)),
                    "note": "shared with other jobs: figures are indicative"},
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "tensorflow_datasets": tfds.__version__, "numpy": numpy.__version__},
        "runs": runs,
    }
    write_atomically(path, lambda f: f.write((json.dumps(results, indent=2) + "\n").encode()))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _forward(args) -> list[str]:
    return ["--data_dir", args.data_dir, "--dataset", args.dataset,
            "--num_frames", str(args.num_frames), "--crop_size", str(args.crop_size),
            "--batch_size", str(args.batch_size), "--batches", str(args.batches),
            "--warmup", str(args.warmup)]


if __name__ == "__main__":
    sys.exit(main())
