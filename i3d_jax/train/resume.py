"""What a resume checks before it trusts a workdir: that the config asks for the
run that was saved (`compare_configs`), and that the checkpoint it resumes from
is whole (`restore_newest_whole`).

A run resumed with other values is either still the same run with another
future (a longer schedule, other cadences, another mesh: accepted, each change
logged and recorded in `config_history.jsonl`), or another run whose saved
state would be read with a wrong meaning (another batch, seed, dataset or
sampling: refused before anything is built, unless
`config.resume_with_changes`).

A checkpoint that is not whole (a save cut short on a file system without
atomic renames, a truncated or deleted array file) is set aside into
`checkpoints.corrupt/` with a `reason.txt`, never deleted, and the run resumes
from the newest one that is whole.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import numpy as np
from absl import logging

from i3d_jax import checkpoints
from i3d_jax.atomic_file import write_atomically

SET_ASIDE = "checkpoints.corrupt"
HISTORY = "config_history.jsonl"

# Keys whose change leaves the saved state meaning what it meant: they shape only
# what comes next (how long, how fast, how often, on which devices, with which
# kernels, evaluated how). A prefix ending in "." covers its group.
CHANGEABLE_ON_RESUME = (
    "total_steps", "schedule.", "optimizer.", "log_every_steps", "checkpoint_every_steps",
    "eval_every_steps", "keep_checkpoints", "mesh.", "eval.", "eval_split", "model.kernels",
    "dtype", "input.threads", "input.keep_freed_memory", "data_dir", "init_from")
# Read, never compared: it is the permission itself.
NOT_COMPARED = ("resume_with_changes",)
ABSENT = "(absent)"


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _changeable(key: str) -> bool:
    return any(key == c or (c.endswith(".") and key.startswith(c)) for c in CHANGEABLE_ON_RESUME)


@dataclasses.dataclass
class ConfigChanges:
    """The keys whose value differs from the saved run's: {key: (old, new)}."""

    accepted: dict
    forced: dict  # would be refused; config.resume_with_changes lets them through
    saved: dict | None = None  # the saved config.json

    def __bool__(self):
        return bool(self.accepted or self.forced)

    def report(self, workdir: Path, step: int, config) -> None:
        """Logs each change (and the learning rate it gives at `step`) and appends
        an entry to `config_history.jsonl`; process 0 only."""
        if not self or jax.process_index() != 0:
            return
        for key, (old, new) in self.accepted.items():
            logging.info("resume at step %d with a changed config: %s: %r -> %r",
                         step, key, old, new)
        for key, (old, new) in self.forced.items():
            logging.warning("resume at step %d with a changed config (resume_with_changes): "
                            "%s: %r -> %r", step, key, old, new)
        changed = {**self.accepted, **self.forced}
        lr_note = {}
        if self.saved is not None and any(
                k == "total_steps" or k.startswith("schedule.") for k in changed):
            old_lr, new_lr = _learning_rates(config, self.saved, step)
            logging.info("learning rate at step %d: %.6g under the saved schedule -> %.6g",
                         step, old_lr, new_lr)
            lr_note = {"learning_rate_at_step": [old_lr, new_lr]}
        entry = {"step": step, "changes": {k: [o, n] for k, (o, n) in changed.items()},
                 "forced": sorted(self.forced), **lr_note}
        path = workdir / HISTORY
        previous = path.read_text() if path.exists() else ""
        text = previous + json.dumps(entry) + "\n"
        write_atomically(path, lambda f: f.write(text.encode()))


def _learning_rates(config, saved: dict, step: int) -> tuple[float, float]:
    import copy

    from i3d_jax.train.optim import make_schedule

    old = copy.deepcopy(config)
    with old.unlocked():
        old.total_steps = saved.get("total_steps", config.total_steps)
        for key, value in saved.get("schedule", {}).items():
            if key in old.schedule:
                old.schedule[key] = tuple(value) if isinstance(value, list) else value
    return float(make_schedule(old)(step)), float(make_schedule(config)(step))


def saved_config(workdir: Path) -> dict | None:
    path = workdir / "config.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); it records the run this "
                         "workdir holds: restore it, or choose another --workdir") from None


def compare_configs(config, workdir: Path) -> ConfigChanges:
    """The config's differences from the one saved in `workdir/config.json` (empty
    where no checkpoint or no config was saved). Refuses, naming each key with its old and new value,
    a change to a key that would give the saved state another meaning, unless
    config.resume_with_changes."""
    if not _has_checkpoints(workdir):
        return ConfigChanges({}, {})  # nothing to resume: a new run of this config
    saved = saved_config(workdir)
    if saved is None:
        logging.warning("%s has checkpoints but no config.json: the config's changes "
                        "since the saved run cannot be checked", workdir)
        return ConfigChanges({}, {})
    new = _flat(json.loads(config.to_json_best_effort(sort_keys=True)))
    old = _flat(saved)
    accepted, refused = {}, {}
    for key in sorted(set(new) | set(old)):
        if key in NOT_COMPARED:
            continue
        before, after = old.get(key, ABSENT), new.get(key, ABSENT)
        if before == after or (key == "model.kernels" and after == "auto"):
            # "auto" is resolved when the model is built, and config.json says to what.
            continue
        if ABSENT in (before, after):
            # A key another version of i3d_jax added or removed: not a change of the run's.
            accepted[key] = (before, after)
        elif _changeable(key):
            accepted[key] = (before, after)
        else:
            refused[key] = (before, after)
    if refused and not config.resume_with_changes:
        lines = "\n  ".join(f"{k}: {o!r} -> {n!r}" for k, (o, n) in refused.items())
        raise ValueError(
            f"{workdir} holds a run whose saved state these changes would misread "
            f"(its batches, data position or meaning):\n  {lines}\nrerun with the saved "
            "values, use another --workdir, or pass --config.resume_with_changes=True to "
            "resume anyway (the changes are logged and recorded in "
            f"{workdir / HISTORY})")
    return ConfigChanges(accepted, refused, saved)


def _has_checkpoints(workdir: Path) -> bool:
    folder = workdir / checkpoints.TRAINING_CHECKPOINTS
    return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


# --------------------------------------------------------------------------
# Whole checkpoints


def input_problem(step_dir: Path, iterator) -> str | None:
    """This process's input position, read again on its own: unreadable by TF's own
    checksums, or None (the restore failed for another reason)."""
    import tensorflow as tf

    prefix = step_dir / "input" / f"process_{jax.process_index()}" / "iterator"
    if iterator is not None and prefix.with_name("iterator.index").exists():
        try:
            iterator.restore(prefix)
        except (tf.errors.DataLossError, tf.errors.NotFoundError, tf.errors.OutOfRangeError,
                IndexError) as error:  # IndexError: TF's reader on a truncated file
            return f"input position unreadable: {str(error).splitlines()[0][:200]}"
    return None


def _agreed(problem: str | None) -> str | None:
    """Every process's verdict on one step: bad if any process found it bad."""
    if jax.process_count() == 1:
        return problem
    from jax.experimental import multihost_utils

    bad = multihost_utils.process_allgather(np.int32(problem is not None))
    if problem is None and np.any(bad):
        return "unreadable on another process"
    return problem


def set_aside(workdir: Path, step_dir: Path, problem: str) -> Path:
    """Moves a step that is not whole into `workdir/checkpoints.corrupt/` with its
    reason (process 0; the others wait for it)."""
    folder = workdir / SET_ASIDE
    target = folder / step_dir.name
    if jax.process_index() == 0:
        folder.mkdir(exist_ok=True)
        n = 1
        while target.exists():
            n += 1
            target = folder / f"{step_dir.name}-{n}"
        shutil.move(str(step_dir), str(target))
        (target / "reason.txt").write_text(problem + "\n")
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"set aside {step_dir}")
    return target


def restore_newest_whole(run, iterator):
    """(step, state) of the newest whole checkpoint of the run's workdir, each newer
    one that is not whole set aside and named in one log line; (None, None) where
    there is none and none was ever set aside. Raises FileNotFoundError where every
    checkpoint was set aside."""
    manager, workdir = run.manager, Path(run.workdir)
    while (step := manager.latest_step()) is not None:
        step_dir = Path(manager.directory) / str(step)
        problem = _agreed(checkpoints.step_problem(step_dir))
        if problem is None:
            checkpoints.check_resumable(manager, step, run.metadata, workdir)
            try:
                state = checkpoints.restore_training(manager, step, run.abstract_state,
                                                     run.state_shardings, iterator)
            except Exception:
                problem = input_problem(step_dir, iterator)
                if problem is None:
                    raise  # the files read: not a broken checkpoint, a real error
            problem = _agreed(problem)
            if problem is None:
                return step, state
        target = set_aside(workdir, step_dir, problem)
        logging.warning("checkpoint step %d in %s is not whole: %s; moved to %s (nothing "
                        "deleted); trying the one before", step, manager.directory, problem,
                        target)
        manager.reload()
    aside = workdir / SET_ASIDE
    if aside.is_dir() and any(aside.iterdir()):
        raise FileNotFoundError(
            f"{manager.directory} holds no whole checkpoint: every one was set aside in "
            f"{aside} (each with its reason.txt). Move one back if you know it to be good, "
            f"or delete {aside} to start this run again from its seed")
    return None, None
