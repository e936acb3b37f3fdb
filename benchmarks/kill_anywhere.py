"""Kill a small training run at random moments, resume it, and check it ends as if
never killed: `i3d-jax train` on the generated tiny dataset (the 3D-ConvNet at
1/8 width, 40 steps, a checkpoint every 2, an eval at 20 and 40), SIGKILLed at
`--kills` moments drawn (seeded) uniformly over the training span of an
uninterrupted run, each in its own workdir, then the same command again. A kill
passes when the resumed run's parameters are bitwise those of the uninterrupted
run and metrics.jsonl holds each step's row, and each eval's, exactly once.
tests/test_train.py kills four chosen moments in CI; this is the random sweep.

    PYTHONPATH=. python benchmarks/kill_anywhere.py --kills 20 --seed 0 \
        --json benchmarks/results/kill_anywhere.json
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

STEPS = 40
RUN = ["--config.dataset=synthetic_motion/tiny", "--config.batch_size=8",
       "--config.eval.batch_size=8", "--config.input.crop_size=24",
       "--config.input.rgb.num_frames=8", "--config.eval.whole_video_frames=0",
       "--config.model.width_multiplier=0.125", "--config.model.architecture=conv3d",
       "--config.log_every_steps=1", "--config.input.shuffle_buffer=8",
       "--config.schedule.name=constant", "--config.schedule.learning_rate=0.01",
       f"--config.total_steps={STEPS}", "--config.checkpoint_every_steps=2",
       "--config.keep_checkpoints=40", "--config.eval_every_steps=20"]


def launch(workdir: Path, data_dir: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "i3d_jax", "train", "--workdir", str(workdir),
         f"--config.data_dir={data_dir}", *RUN],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


class Timeline:
    """A run's log lines with the seconds since its start, read as they come."""

    def __init__(self, process: subprocess.Popen):
        self.started = time.time()
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._reader.start()

    def _read(self, process):
        for line in process.stderr:
            self.lines.append((time.time() - self.started, line.rstrip()))

    def join(self):
        self._reader.join()

    def last(self) -> str:
        return self.lines[-1][1] if self.lines else ""


def moment_of(last_line: str, checkpoints_dir: Path, ended: bool) -> str:
    """Where a kill landed, from the run's last log line and its checkpoint folder."""
    if ended:
        return "after the run ended"
    if checkpoints_dir.is_dir() and any("tmp" in p.name for p in checkpoints_dir.iterdir()):
        return "during a save"
    if "compil" in last_line or "training conv3d" in last_line:
        return "compiling"
    if "eval on" in last_line:
        return "after an eval"
    if f"step {STEPS}/{STEPS}" in last_line:
        return "final save, eval or wait"
    if "step 20/" in last_line:
        return "step-20 save or eval"
    if f"/{STEPS}" in last_line:
        return "between steps"
    return "set-up"


def params_sha256(workdir: Path) -> str:
    from i3d_jax import checkpoints
    from i3d_jax.models.stats import params_sha256 as sha256

    return sha256(checkpoints.load_training_variables(workdir)[1]["params"])


def rows_once(workdir: Path) -> bool:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r["step"] for r in rows if r["kind"] == "train"]
    evals = [r["step"] for r in rows if r["kind"] == "eval"]
    return train == list(range(1, STEPS + 1)) and evals == [20, STEPS]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", help="folder for the data and workdirs (default: a temporary one)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)

    import numpy as np

    from i3d_jax import datasets

    root = Path(args.root or tempfile.mkdtemp(prefix="kill_anywhere-"))
    data_dir = root / "tfds"
    datasets.builder("synthetic_motion/tiny", data_dir=str(data_dir)).download_and_prepare()
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(root / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

    # Twice: the first fills XLA's persistent cache, the second times a run as each
    # killed one runs (compiled programs from the cache).
    for name in ("uninterrupted", "uninterrupted_cached"):
        reference = root / name
        shutil.rmtree(reference, ignore_errors=True)
        process = launch(reference, data_dir, env)
        timeline = Timeline(process)
        process.wait()
        timeline.join()
        if process.returncode:
            raise SystemExit("the uninterrupted run failed:\n" +
                             "\n".join(line for _, line in timeline.lines[-30:]))
    expected = params_sha256(reference)
    start = next(t for t, line in timeline.lines if "compiled the train step" in line)
    end = timeline.lines[-1][0]
    print(f"uninterrupted run: {end:.1f} s, training from {start:.1f} s; killing {args.kills} "
          f"runs at moments drawn from [{start:.1f}, {end:.1f}] s (seed {args.seed})",
          flush=True)

    delays = np.random.default_rng(args.seed).uniform(start, end, args.kills)
    kills = []
    for i, delay in enumerate(delays):
        workdir = root / f"killed_{i:02d}"
        shutil.rmtree(workdir, ignore_errors=True)
        process = launch(workdir, data_dir, env)
        timeline = Timeline(process)
        try:
            process.wait(timeout=delay)
            ended = True
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            ended = False
            moment = moment_of(timeline.last(), workdir / "checkpoints", ended)
            process.wait()
        timeline.join()
        if ended:
            moment = moment_of("", workdir / "checkpoints", ended)
        resumed = subprocess.run(
            [sys.executable, "-m", "i3d_jax", "train", "--workdir", str(workdir),
             f"--config.data_dir={data_dir}", *RUN], env=env, capture_output=True, text=True)
        ok = (resumed.returncode == 0 and params_sha256(workdir) == expected
              and rows_once(workdir))
        kills.append({"delay_s": round(float(delay), 2), "moment": moment,
                      "last_line": timeline.last()[-120:], "passed": bool(ok)})
        print(json.dumps(kills[-1]), flush=True)
        if resumed.returncode:
            print(resumed.stderr[-2000:], file=sys.stderr)

    passed = sum(k["passed"] for k in kills)
    summary = {"passed": passed, "kills": len(kills),
               "moments": dict(collections.Counter(k["moment"] for k in kills))}
    print(json.dumps(summary))
    if args.json:
        from benchmarks.machine import machine_record
        from i3d_jax.atomic_file import write_atomically

        record = {"benchmark": "kill anywhere (SIGKILL at random moments, then resume)",
                  "machine": machine_record(), "seed": args.seed,
                  "uninterrupted_run_s": round(end, 1), **summary, "runs": kills}
        write_atomically(args.json, lambda f: f.write((json.dumps(record, indent=2) + "\n")
                                                      .encode()))
    return 0 if passed == len(kills) else 1


if __name__ == "__main__":
    raise SystemExit(main())
