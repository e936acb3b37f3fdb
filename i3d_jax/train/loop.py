"""The training loop: `train_and_evaluate(config, workdir)`.

Rerunning on a workdir resumes from its latest checkpoint, data position
included; `init_from` starts a new run from other weights and is never taken
for a resume. SIGTERM (what a cluster sends before it takes a machine) saves
a checkpoint at the next step boundary and returns. Process 0 logs and writes
the metrics; every process feeds its own part of each global batch.
"""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np
from absl import logging

from i3d_jax import checkpoints, sharding
from i3d_jax.train.config_keys import check_config, clip_options
from i3d_jax.train.resume import ConfigChanges, compare_configs, restore_newest_whole
from i3d_jax.train.run import Run, check_dataset, check_mesh, initial_state, setup
from i3d_jax.train.step import TrainState, jit_train_step
from i3d_jax.train.workdir import (
    MetricsLog, drop_rows_after, last_eval, quiet_library_logs, workdir_lock, write_config)

if TYPE_CHECKING:
    import ml_collections


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
    """Trains (or resumes) in `workdir` to config.total_steps; returns the final eval metrics.

    SIGTERM (what a cluster sends before it takes a machine) saves a checkpoint at
    the next step boundary and returns; the same call again resumes from it.
    """
    workdir = Path(workdir)
    quiet_library_logs()
    # A refused launch leaves nothing behind: every check that can fail on the
    # config, the devices or the data runs before the workdir exists.
    check_config(config)
    check_mesh(config)
    check_dataset(config)
    workdir.mkdir(parents=True, exist_ok=True)
    # From the start: a notice during set-up or compiling saves after the first step.
    with workdir_lock(workdir), PreemptionNotice() as preemption:
        # Under the lock (a refused second launch compares nothing), before set-up.
        changes = compare_configs(config, workdir)
        return _train_and_evaluate(config, workdir, preemption, changes)


def _train_and_evaluate(config, workdir: Path, preemption, changes: ConfigChanges) -> dict:
    run = setup(config, workdir)
    train_iter = _train_iterator(run)
    latest, state = restore_newest_whole(run, train_iter)
    # A resumed run logs again the steps after its checkpoint, a new one every step:
    # their first logging goes, so metrics.jsonl has each step once.
    drop_rows_after(workdir, latest or 0)
    if latest is not None:
        logging.info("resuming from step %d (latest checkpoint in %s)", latest,
                     run.manager.directory)
        changes.report(workdir, latest, config)
    else:
        if config.init_from:
            logging.info("starting a new run from the weights of %s (init_from, not a resume)",
                         config.init_from)
        else:
            logging.info("starting a new run from scratch (seed %d)", config.seed)
        state = initial_state(run)
    write_config(config, workdir, kernels=run.fns.kernels.name)
    step = int(jax.device_get(state.step))
    metrics_log = MetricsLog(workdir)
    try:
        if step >= config.total_steps:
            logging.info("this run already finished: step %d of %d; nothing to train",
                         step, config.total_steps)
            final = last_eval(workdir, step)
            if final is None:  # killed between the last save and the eval's row
                final = run.evaluator.evaluate(state)
                metrics_log.write(step, "eval", final)
            return final
        return _train_loop(run, state, step, train_iter, metrics_log, preemption)
    finally:
        run.manager.wait_until_finished()
        metrics_log.close()



def _train_loop(run: Run, state, step: int, train_iter, metrics_log: MetricsLog,
                preemption) -> dict:
    config = run.config
    logging.info("training %s on %s: steps %d -> %d, global batch %d, mesh data=%d x fsdp=%d",
                 config.model.architecture, config.dataset, step, config.total_steps,
                 config.batch_size, run.mesh.shape["data"], run.mesh.shape["fsdp"])
    return _steps(run, state, step, train_iter, metrics_log, preemption)


class PreemptionNotice:
    """Notes a SIGTERM (the warning TPU VMs, Kubernetes and SLURM give before they
    take a machine) so the loop can save at the next step boundary; Orbax's
    `reached_preemption` covers multi-process runs, whose processes must agree on
    the step."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self):
        # Several processes: jax.distributed's own notifier takes SIGTERM, and Orbax
        # asks it; a Python handler here would replace it.
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._note)
        return self

    def _note(self, signum, frame):
        del signum, frame
        self.received = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        elif jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def reached(self, manager, step: int) -> bool:
        if jax.process_count() > 1:
            return manager.reached_preemption(step)
        return self.received


def _steps(run: Run, state, step: int, train_iter, metrics_log: MetricsLog, preemption):
    config = run.config
    train_step = jit_train_step(run.fns, run.state_shardings, run.mesh)
    pending, interval_start, interval_steps = [], time.time(), 0
    run_start_step, run_start = step, time.time()
    began = run_start  # the wall time reported at the end includes the compile
    final_eval = None
    while step < config.total_steps:
        batch = sharding.global_batch(next(train_iter), run.mesh)
        if step == run_start_step:
            train_step = _compiled(train_step, state, batch)
            interval_start = run_start = time.time()  # the rate and ETA leave the compile out
        state, metrics = train_step(state, batch)
        step += 1
        interval_steps += 1
        pending.append(metrics)
        if step % config.log_every_steps == 0 or step == config.total_steps:
            _check_finite(state, run.manager)
            values = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}
            elapsed = time.time() - interval_start
            values["steps_per_sec"] = interval_steps / max(elapsed, 1e-9)
            values["clips_per_sec"] = values["steps_per_sec"] * config.batch_size
            done = step - run_start_step
            eta = (time.time() - run_start) / done * (config.total_steps - step)
            logging.info("step %d/%d  loss %.4f  accuracy %.3f  lr %.4g  %.1f clips/s  ETA %s",
                         step, config.total_steps, values["loss"], values["accuracy"],
                         values["learning_rate"], values["clips_per_sec"], _duration(eta))
            metrics_log.write(step, "train", values)
            pending, interval_start, interval_steps = [], time.time(), 0
        last = step == config.total_steps
        preempted = not last and preemption.reached(run.manager, step)
        if step % config.checkpoint_every_steps == 0 or last or preempted:
            _check_finite(state, run.manager)
            checkpoints.save_training(run.manager, step, state, train_iter, run.metadata,
                                      force=True)
        if preempted:
            run.manager.wait_until_finished()
            logging.info("SIGTERM: saved step %d in %s and stopped; the same command resumes "
                         "from it", step, run.manager.directory)
            return None
        if last or (config.eval_every_steps and step % config.eval_every_steps == 0):
            final_eval = run.evaluator.evaluate(state)
            metrics_log.write(step, "eval", final_eval)
    logging.info("finished %d steps in %s", step - run_start_step,
                 _duration(time.time() - began))
    return final_eval


def _compiled(train_step, state, batch):
    """The step compiled for these shapes, said before (it takes a while) and after."""
    logging.info("compiling the train step (from seconds for a small model to a few minutes "
                 "for a full-size one on a CPU)")
    started = time.time()
    compiled = train_step.lower(state, batch).compile()
    logging.info("compiled the train step in %.0f s", time.time() - started)
    return compiled


def _check_finite(state: TrainState, manager) -> None:
    bad = int(jax.device_get(state.first_bad_step))
    if bad >= 0:
        latest = manager.latest_step()
        raise FloatingPointError(
            f"non-finite loss or gradient norm at step {bad}: training stopped, nothing after "
            f"step {bad - 1} was kept"
            + (f"; the latest checkpoint (step {latest}) is from before it" if latest else ""))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _train_iterator(run: Run):
    from i3d_jax.input_pipeline import DatasetIterator, train_dataset

    config = run.config
    if config.input.keep_freed_memory:
        from i3d_jax.host_memory import keep_freed_memory

        logging.info("%s", keep_freed_memory())
    return DatasetIterator(train_dataset(
        run.builder, batch_size=sharding.check_batch_size(config.batch_size, run.mesh),
        options=clip_options(config), split=config.train_split, seed=config.seed,
        shuffle_buffer=config.input.shuffle_buffer, flip=config.input.flip,
        threads=config.input.threads or None))
