"""The workdir of a training run: one live run at a time (the lock), the
resolved config (`config.json`), and the metrics (`metrics.jsonl` and
TensorBoard), written by process 0."""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging as logging_lib
import os
import socket
import time
from pathlib import Path

import jax
import numpy as np

from i3d_jax.atomic_file import write_atomically


@contextlib.contextmanager
def workdir_lock(workdir: Path):
    """One live run per workdir: an exclusive lock on `workdir/.train.lock`, held
    by process 0 while it trains, its verdict shared with every process (a second
    launch of a multi-host job is refused on each host, none left waiting for a
    process 0 that quit). The kernel drops the lock when the process dies, so a
    killed run leaves nothing stuck."""
    with contextlib.ExitStack() as stack:
        holder = None
        if jax.process_index() == 0:
            f = stack.enter_context(open(workdir / ".train.lock", "a+"))
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            refused = multihost_utils.broadcast_one_to_all(np.int32(holder is not None))
            if int(refused) and holder is None:
                holder = "its lock is held, as process 0 of this job found"
        if holder is not None:
            # A plain RuntimeError: the command line prints it as one line.
            raise RuntimeError(
                f"{workdir} is in use by a live run ({holder}); wait for it to end, stop it, "
                "or choose another --workdir")
        if jax.process_index() == 0:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            f.flush()
            stack.callback(fcntl.flock, f, fcntl.LOCK_UN)
            stack.callback(f.truncate)
            stack.callback(f.seek, 0)
        yield


def write_config(config, workdir: Path, kernels: str | None = None) -> None:
    """`workdir/config.json`: every key of the config, `model.kernels` as the
    run resolved it (`kernels`, e.g. "cpu" for "auto")."""
    if jax.process_index() != 0:
        return
    if kernels is not None and config.model.kernels != kernels:
        config = config.copy_and_resolve_references()
        config.model.kernels = kernels
    text = config.to_json_best_effort(indent=2, sort_keys=True) + "\n"
    write_atomically(workdir / "config.json", lambda f: f.write(text.encode()))



class MetricsLog:
    """`metrics.jsonl` (one JSON object a line) and TensorBoard, from process 0 only."""

    def __init__(self, workdir: Path):
        from clu import metric_writers

        self.enabled = jax.process_index() == 0
        self.path = workdir / "metrics.jsonl"
        # TensorBoard only: the progress line already says it all in the log.
        self.writer = (metric_writers.SummaryWriter(str(workdir)) if self.enabled
                       else metric_writers.MultiWriter([]))

    def write(self, step: int, kind: str, values: dict) -> None:
        if not self.enabled:
            return
        scalars = {k: v for k, v in values.items() if isinstance(v, (int, float))}
        self.writer.write_scalars(step, {f"{kind}/{k}": v for k, v in scalars.items()})
        self.writer.flush()
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "kind": kind, **values}) + "\n")

    def close(self):
        self.writer.close()


class _LibraryChatter(logging_lib.Filter):
    """Drops the INFO lines Orbax and TFDS log on every save and read, and JAX's on
    the accelerators it looked for and did not find; warnings stay, but for TFDS's
    on a dataset folder without dataset_info.json: a dataset about to be built on
    first use, which the build's own line says."""

    SOURCES = ("/orbax/", "/tensorflow_datasets/", "/tensorflow/python/checkpoint/",
               "/jax/_src/xla_bridge.py")
    UNBUILT = "has no dataset_info.json"

    def filter(self, record) -> bool:
        if "/tensorflow_datasets/" in record.pathname and self.UNBUILT in record.getMessage():
            return False
        return record.levelno > logging_lib.INFO or not any(
            s in record.pathname for s in self.SOURCES)


def quiet_library_logs() -> None:
    """The filter above on absl's logger (TFDS and Orbax log through it) and on its
    handler (which prints what other libraries log through Python's logging)."""
    from absl import logging as absl_logging

    for target in (logging_lib.getLogger("absl"), absl_logging.get_absl_handler()):
        if not any(isinstance(f, _LibraryChatter) for f in target.filters):
            target.addFilter(_LibraryChatter())


def metric_rows(workdir: Path) -> list[dict]:
    """The rows of `metrics.jsonl`; a last line cut short (a run killed while
    writing it) is left out."""
    path = workdir / "metrics.jsonl"
    return _parse_rows(path, path.read_text()) if path.exists() else []


def _parse_rows(path: Path, text: str) -> list[dict]:
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines) - 1:  # only the last line can be a write cut short
                raise ValueError(f"{path}, line {number + 1}: not JSON: {line[:80]!r}") from None
    return rows


def last_eval(workdir: Path, step: int) -> dict | None:
    """The eval metrics logged at `step`, if the run got that far (process 0's file:
    every process reads it, so all take the same path)."""
    evals = [r for r in metric_rows(workdir) if r.get("kind") == "eval" and r["step"] == step]
    if not evals:
        return None
    return {k: v for k, v in evals[-1].items() if k not in ("kind", "step")}


def drop_rows_after(workdir: Path, step: int) -> None:
    """Keeps the rows of steps up to `step` (and drops a last line cut short)."""
    if jax.process_index() != 0:
        return
    path = workdir / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    rows = _parse_rows(path, text)
    kept = [r for r in rows if r["step"] <= step]
    cut_short = bool(text) and not text.endswith("\n")
    if len(kept) != len(rows) or cut_short:
        text = "".join(json.dumps(r) + "\n" for r in kept)
        write_atomically(path, lambda f: f.write(text.encode()))

