"""The paper's comparison in miniature: the five architectures (and I3D on RGB,
on flow and on both) trained on `synthetic_motion` with one budget, each run
with several seeds; a markdown table and a bar chart of their test top-1.

    python -m benchmarks.miniature_comparison --out runs/miniature [--steps 250] [--seeds 0,1]

synthetic_motion's 8 classes are defined by motion alone (direction x speed of
a textured shape; every single frame is drawn from the same distribution), so
one RGB frame should score near chance (12.5%) and a model that sees motion
near the top. Two-Stream's one-frame RGB stream and its flow stream are scored
separately from its run (`rgb_top1`, `flow_top1`), as are Two-Stream I3D's.

Every run is `i3d-jax train` on the main job's config (experiments/default.py:
quarter width, AdamW, 56x56 crops, batch 16) with the same number of steps;
only what each architecture needs differs (frames per stream, its loss). The
runs share one XLA compilation cache, so a second seed compiles nothing.
Writes OUT/comparison.json, OUT/comparison.md and OUT/comparison.png.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.machine import machine_record

COMMON = ["--config.dataset=synthetic_motion/default", "--config.log_every_steps=50",
          "--config.eval_every_steps=0"]

# (row name, architecture, overrides, which metric keys give which rows)
RUNS = {
    "convnet_lstm": ["--config.model.architecture=convnet_lstm",
                     "--config.loss.endpoints=LogitsPerTime"],
    "conv3d": ["--config.model.architecture=conv3d", "--config.eval.whole_video_frames=0",
               "--config.eval.num_clips=2"],
    "two_stream": ["--config.model.architecture=two_stream", "--config.input.streams=rgb,flow",
                   "--config.input.rgb.num_frames=1", "--config.input.rgb.offset=5",
                   "--config.input.flow.num_frames=10", "--config.loss.endpoints=rgb_logits,"
                   "flow_logits", "--config.eval.whole_video_frames=30"],
    "two_stream_fused": ["--config.model.architecture=two_stream_fused",
                         "--config.input.streams=rgb,flow", "--config.input.rgb.num_frames=2",
                         "--config.input.rgb.stride=10", "--config.input.rgb.offset=5",
                         "--config.input.flow.num_frames=20",
                         "--config.eval.whole_video_frames=20"],
    "i3d_rgb": ["--config.model.architecture=i3d"],
    "i3d_flow": ["--config.model.architecture=i3d", "--config.input.streams=flow"],
    "i3d_two_stream": ["--config.model.architecture=two_stream_i3d",
                       "--config.input.streams=rgb,flow",
                       "--config.loss.endpoints=rgb_logits,flow_logits"],
}

# Table rows: (label, run, metric key); the paper's name for each in brackets.
ROWS = [
    ("ConvNet+LSTM (RGB)", "convnet_lstm", "top1"),
    ("3D-ConvNet (RGB)", "conv3d", "top1"),
    ("Two-Stream: RGB stream (one frame)", "two_stream", "rgb_top1"),
    ("Two-Stream: flow stream", "two_stream", "flow_top1"),
    ("Two-Stream (RGB + flow)", "two_stream", "top1"),
    ("3D-Fused Two-Stream", "two_stream_fused", "top1"),
    ("I3D RGB", "i3d_rgb", "top1"),
    ("I3D flow", "i3d_flow", "top1"),
    ("Two-Stream I3D (RGB + flow)", "i3d_two_stream", "top1"),
]


def train(workdir: Path, overrides: list[str], cache: Path) -> tuple[dict, float]:
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "i3d_jax", "train", "--workdir", str(workdir),
                             *overrides], env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"training in {workdir} failed:\n{result.stderr[-3000:]}")
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "eval"][-1], time.time() - started


def plot(table: list[dict], path: Path) -> None:
    from i3d_jax.report import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.8))
    labels = [row["row"] for row in table]
    means = [100 * row["mean"] for row in table]
    ax.barh(range(len(table)), means, color="C0", alpha=0.8)
    for i, row in enumerate(table):
        ax.plot([100 * v for v in row["values"]], [i] * len(row["values"]), "k.", markersize=8)
    ax.axvline(12.5, color="C3", linestyle="--", label="chance (8 classes)")
    ax.set_yticks(range(len(table)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("test top-1 (%): bars the mean, dots the seeds")
    ax.set_title("synthetic_motion: classes defined by motion alone")
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_png(fig, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs and results")
    parser.add_argument("--steps", type=int, default=250, help="training steps of every run")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (each run per seed)")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of runs")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.runs.split(",")
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        parser.error(f"unknown runs {unknown}; known: {', '.join(RUNS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results = {}
    for name in names:
        for seed in seeds:
            workdir = args.out / f"{name}_seed{seed}"
            print(f"[{time.time() - started:6.0f} s] training {name}, seed {seed}", file=sys.stderr)
            metrics, seconds = train(workdir, [*COMMON, f"--config.total_steps={args.steps}",
                                               f"--config.seed={seed}", *RUNS[name]],
                                     args.out / "xla_cache")
            results.setdefault(name, []).append({"seed": seed, "seconds": round(seconds, 1),
                                                 **metrics})
            print(f"           top-1 {metrics['top1']:.3f} in {seconds:.0f} s", file=sys.stderr)
    table = []
    for label, run, key in ROWS:
        if run in results:
            values = [r[key] for r in results[run]]
            table.append({"row": label, "run": run, "metric": key, "values": values,
                          "mean": sum(values) / len(values),
                          "seconds": [r["seconds"] for r in results[run]]})
    lines = [f"| model | test top-1 (%), mean | seeds {', '.join(map(str, seeds))} | wall time per "
             "run (s) |", "| --- | ---: | --- | --- |"]
    for row in table:
        lines.append(f"| {row['row']} | {100 * row['mean']:.1f} | "
                     + ", ".join(f"{100 * v:.1f}" for v in row["values"])
                     + " | " + ", ".join(f"{s:.0f}" for s in row["seconds"]) + " |")
    markdown = "\n".join(lines) + "\n"
    total = time.time() - started
    record = {"steps": args.steps, "seeds": seeds, "wall_s": round(total, 1),
              "command": "python -m benchmarks.miniature_comparison " + " ".join(
                  argv if argv is not None else sys.argv[1:]),
              "machine": machine_record(), "rows": table, "runs": results}
    (args.out / "comparison.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / "comparison.md").write_text(markdown)
    plot(table, args.out / "comparison.png")
    print(markdown, end="")
    print(f"{len(names) * len(seeds)} runs in {total / 60:.1f} min; {args.out}/comparison.png",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
