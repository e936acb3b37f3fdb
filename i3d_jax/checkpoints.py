"""Orbax checkpoints of model variables with the metadata needed to rebuild
the model (architecture, stream, classes, label names).

A pretrained checkpoint is a directory written by `save_pretrained`:
`variables/` ({params, batch_stats}, Orbax StandardSave) and `metadata/`
(JSON). Orbax writes into a temporary directory and renames it when done, so
an interrupted save never leaves a checkpoint that looks complete.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from i3d_jax.models import build_model
from i3d_jax.streams import STREAM_CHANNELS  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


@dataclass
class ModelMetadata:
    """Everything besides the arrays that a checkpoint's user needs."""

    architecture: str = "i3d"
    stream: str = "rgb"
    num_classes: int = 400
    in_channels: int = 3
    batch_norm_scale: bool = False
    labels: list[str] = field(default_factory=list)
    source: str = ""
    width_multiplier: float = 1.0

    def model_fields(self) -> dict:
        fields = {"num_classes": self.num_classes, "batch_norm_scale": self.batch_norm_scale}
        if self.width_multiplier != 1.0:
            fields["width_multiplier"] = self.width_multiplier
        return fields

    def build_model(self, **overrides):
        return build_model(self.architecture, **{**self.model_fields(), **overrides})


def _checkpointer():
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def save_pretrained(directory, variables, metadata: ModelMetadata, overwrite: bool = False):
    """Writes variables and metadata to `directory` atomically."""
    directory = Path(directory).absolute()
    if directory.exists() and not overwrite:
        raise FileExistsError(f"{directory} already exists; choose another --out or pass --overwrite")
    if metadata.labels and len(metadata.labels) != metadata.num_classes:
        raise ValueError(
            f"{len(metadata.labels)} label names for {metadata.num_classes} classes"
        )
    variables = jax.tree.map(np.asarray, variables)
    # Write beside the target and swap only once the new checkpoint is whole,
    # so neither a failed write nor an overwrite can lose the old one.
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.with_name(f".{directory.name}.writing-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    try:
        _checkpointer().save(
            staging,
            args=ocp.args.Composite(
                variables=ocp.args.StandardSave(variables),
                metadata=ocp.args.JsonSave(asdict(metadata)),
            ),
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if directory.exists():
        retired = directory.with_name(f".{directory.name}.replaced-{os.getpid()}")
        directory.rename(retired)
        staging.rename(directory)
        shutil.rmtree(retired)
    else:
        staging.rename(directory)
    log.info("wrote %s", directory)


def load_metadata(directory) -> ModelMetadata:
    directory = Path(directory).absolute()
    meta_file = directory / "metadata" / "metadata"
    if not meta_file.exists():
        raise FileNotFoundError(
            f"{directory}: not an i3d_jax checkpoint (no metadata); write one with "
            "`i3d-jax convert` or `i3d-jax inflate`"
        )
    with open(meta_file) as f:
        raw = json.load(f)
    known = set(ModelMetadata.__dataclass_fields__)
    return ModelMetadata(**{k: v for k, v in raw.items() if k in known})


def load_pretrained(directory):
    """Returns (metadata, variables) of a checkpoint written by save_pretrained, or of
    a training workdir's latest checkpoint."""
    directory = Path(directory).absolute()
    if is_training_workdir(directory):
        metadata, variables, _ = load_training_variables(directory)
        return metadata, variables
    metadata = load_metadata(directory)
    restored = _checkpointer().restore(
        directory,
        args=ocp.args.Composite(variables=ocp.args.StandardRestore()),
    )
    variables = jax.tree.map(np.asarray, dict(restored["variables"]))
    return metadata, variables


# --------------------------------------------------------------------------
# Training checkpoints: `{workdir}/checkpoints/{step}/` with the train state
# (`state`), every process's input position (`input`) and the model
# metadata (`model`), through one Orbax CheckpointManager. Orbax writes a
# step into a temporary directory and renames it when whole, so a save cut
# short never leaves a step that a resume would take.

TRAINING_CHECKPOINTS = "checkpoints"


class InputIteratorHandler(ocp.CheckpointHandler):
    """Each process's input position: its tf.data iterator's own checkpoint
    (Orbax has no tf.data handler), `process_{index}/iterator.*` in the item,
    and `processes.json`, how many processes wrote it. The training stream is
    one global order whatever the process count (`input_pipeline.train_dataset`),
    so a run with another number of processes takes up the last process's
    position, the end of the last global batch, and continues the same stream."""

    # Positions in the global order; earlier checkpoints (no "order") are positions in
    # each process's own part of the split, a pipeline that no longer exists.
    ORDER = "global"
    # The stages of the pipeline that saved them, which TF's iterator checkpoints
    # depend on: 2 since training batches are assembled at once
    # (`input_pipeline.train_batch`). Raise it whenever the stages change.
    STAGES = 2

    def _prefix(self, directory, process_index):
        return Path(directory) / f"process_{process_index}" / "iterator"

    def save(self, directory, args: "InputIteratorArgs"):
        args.iterator.save(self._prefix(directory, jax.process_index()))
        if jax.process_index() == 0:
            (Path(directory) / "processes.json").write_text(
                json.dumps({"process_count": jax.process_count(), "order": self.ORDER,
                            "stages": self.STAGES}))

    def restore(self, directory, args: "InputIteratorArgs" = None):
        record = Path(directory) / "processes.json"
        saved = json.loads(record.read_text()) if record.exists() else {}
        count = saved.get("process_count")
        if saved.get("order") != self.ORDER:
            log.warning("%s: the input positions were saved by an earlier input pipeline "
                        "(each process reading its own part of the data); the data stream "
                        "starts again from the config's seed", directory)
            return args.iterator
        if saved.get("stages", 1) != self.STAGES:
            log.warning("%s: the input positions were saved by an earlier version of the "
                        "input pipeline (stages %d, now %d), whose iterator checkpoints this "
                        "one cannot read; the data stream starts again from the config's seed",
                        directory, saved.get("stages", 1), self.STAGES)
            return args.iterator
        process = jax.process_index() if count == jax.process_count() else count - 1
        prefix = self._prefix(directory, process)
        if not prefix.with_name(prefix.name + ".index").exists():
            raise FileNotFoundError(f"{directory}: no input position for process {process}")
        if process != jax.process_index():
            log.info("%s: input position of process %d of %d, continued by %d processes",
                     directory, process, count, jax.process_count())
        args.iterator.restore(prefix)
        return args.iterator


@ocp.args.register_with_handler(InputIteratorHandler, for_save=True, for_restore=True)
@dataclasses.dataclass
class InputIteratorArgs(ocp.args.CheckpointArgs):
    iterator: object


def is_training_workdir(directory) -> bool:
    return (Path(directory) / TRAINING_CHECKPOINTS).is_dir()


# Orbax splits each replicated array among its replicas for saving, each
# writing a part; each part is a slice on its device, and each slice of a new
# shape on a new device is compiled: the first save of a process on 8 CPU
# devices compiled 1056 of them for the tiny test I3D (~13 s). Arrays below
# this per replica are saved whole by one replica (what GPUs do anyway).
_REPLICA_PARALLEL_MIN_BYTES = 4 << 20


def _state_handler() -> ocp.PyTreeCheckpointHandler:
    """The handler of a train state: Orbax's own types, replica-parallel only
    for large arrays."""
    # The metadata store records what Orbax's default array handler records
    # beside the arrays, PRNG keys' implementation among it (the state's RBG
    # key restores as threefry without it). Orbax exports no name for it.
    from orbax.checkpoint._src.metadata import array_metadata_store

    arrays = ocp.type_handlers.ArrayHandler(
        min_slice_bytes_for_replica_parallel=_REPLICA_PARALLEL_MIN_BYTES,
        array_metadata_store=array_metadata_store.Store())
    scalars = ocp.type_handlers.ScalarHandler()
    registry = ocp.type_handlers.create_type_handler_registry(
        (int, scalars), (float, scalars), (bytes, scalars), (np.number, scalars),
        (np.ndarray, ocp.type_handlers.NumpyHandler()), (jax.Array, arrays),
        (str, ocp.type_handlers.StringHandler()))
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def training_manager(workdir, *, save_every: int = 1, keep: int | None = None,
                     read_only: bool = False) -> ocp.CheckpointManager:
    """The workdir's CheckpointManager: a save every `save_every` steps, `keep` kept."""
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_every, max_to_keep=keep, create=not read_only,
        read_only=read_only, enable_async_checkpointing=True,
        # What a killed save left behind (never a step a resume would take).
        cleanup_tmp_directories=not read_only)
    return ocp.CheckpointManager(
        Path(workdir).absolute() / TRAINING_CHECKPOINTS, options=options,
        item_handlers={"state": _state_handler(),
                       "model": ocp.JsonCheckpointHandler(),
                       "input": InputIteratorHandler()})


def save_training(manager, step: int, state, iterator, metadata: ModelMetadata,
                  force: bool = False) -> bool:
    items = {"state": ocp.args.PyTreeSave(state), "model": ocp.args.JsonSave(asdict(metadata))}
    if iterator is not None:
        items["input"] = InputIteratorArgs(iterator)
    return manager.save(step, args=ocp.args.Composite(**items), force=force)


def training_metadata(manager, step: int) -> ModelMetadata:
    raw = manager.restore(step, args=ocp.args.Composite(model=ocp.args.JsonRestore()))["model"]
    known = set(ModelMetadata.__dataclass_fields__)
    return ModelMetadata(**{k: v for k, v in raw.items() if k in known})


def check_resumable(manager, step: int, metadata: ModelMetadata, workdir) -> None:
    """Refuses a workdir whose checkpoint holds another model than the config builds."""
    saved = training_metadata(manager, step)
    differ = [f"{name}: checkpoint {getattr(saved, name)!r}, config {getattr(metadata, name)!r}"
              for name in ("architecture", "stream", "num_classes", "in_channels",
                           "batch_norm_scale", "width_multiplier")
              if getattr(saved, name) != getattr(metadata, name)]
    if differ:
        raise ValueError(
            f"{workdir} holds a run of another model (step {step}); use another --workdir, or "
            "config.init_from to start from its weights:\n  " + "\n  ".join(differ))


def restore_training(manager, step: int, abstract_state, shardings, iterator):
    """The train state at `step`, laid out by `shardings` (any mesh), and the input
    position into `iterator` (None: not restored)."""
    target = jax.tree.map(
        lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
        abstract_state, shardings)
    items = {"state": ocp.args.PyTreeRestore(
        target, restore_args=ocp.checkpoint_utils.construct_restore_args(target))}
    if iterator is not None:
        items["input"] = InputIteratorArgs(iterator)
    return _in_fresh_buffers(manager.restore(step, args=ocp.args.Composite(**items))["state"])


def _in_fresh_buffers(tree):
    """The arrays copied into buffers XLA allocated itself, one at a time, each
    restored one freed once copied. Restored buffers may not be donatable (host
    memory Orbax filled, aliased on some backends): a train step that cannot
    donate its input state keeps two states alive, a known cause of running out
    of memory on resume."""
    def fresh(leaf):
        if not isinstance(leaf, jax.Array):
            return leaf
        copy = jax.numpy.copy(leaf)
        leaf.delete()
        return copy

    return jax.tree.map(fresh, tree)


def _json_problem(path: Path) -> str | None:
    if not path.is_file():
        return f"{path.name} is missing"
    try:
        json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return f"{path.name} is not valid JSON ({error})"
    return None


def step_problem(step_dir: Path) -> str | None:
    """What makes a saved step not whole: no commit marker (Orbax writes them last),
    an item folder or its JSON missing or broken, an empty file, an array that
    does not read; None for a whole step. (Orbax keeps no checksum of array data:
    a flipped bit inside a value goes unseen.)"""
    if not (step_dir / "commit_success.txt").is_file():
        return "no commit marker (commit_success.txt): its save never finished"
    problem = _json_problem(step_dir / "_CHECKPOINT_METADATA")
    if problem:
        return problem
    for item in ("state", "model"):
        if not (step_dir / item / "commit_success.txt").is_file():
            return f"item {item!r} has no commit marker"
    for path in (step_dir / "state" / "_METADATA", step_dir / "model" / "metadata"):
        problem = _json_problem(path)
        if problem:
            return f"{path.relative_to(step_dir)}: {problem}"
    if not (step_dir / "state" / "manifest.ocdbt").is_file():
        return "state/manifest.ocdbt is missing"
    empty = sorted(str(p.relative_to(step_dir)) for p in step_dir.rglob("*")
                   if p.is_file() and p.stat().st_size == 0)
    if empty:
        return f"empty file {empty[0]}"
    return _arrays_problem(step_dir / "state")


def _arrays_problem(state_dir: Path) -> str | None:
    """Every byte of the state's arrays read once, straight from TensorStore's OCDBT
    store (each value is a byte range of a data file: a file truncated fails its
    read, a file gone reads empty). Quiet, where a failed read inside Orbax's
    restore prints a traceback per pending read."""
    import tensorstore as ts

    try:
        store = ts.KvStore.open({"driver": "ocdbt", "base": f"file://{state_dir}/"}).result()
        for key in store.list().result():
            # A value in a data file that is gone reads as no bytes, without error.
            if not store.read(key).result().value:
                return f"state unreadable: no bytes for {key.decode()} (a data file is missing)"
    except Exception as error:  # TensorStore raises ValueError and its own kinds
        return f"state unreadable: {str(error).splitlines()[0][:200]}"
    return None


def newest_whole_step(manager) -> int | None:
    """The newest step of a training workdir that is whole (`step_problem`), each
    newer one skipped with a warning naming what is wrong."""
    for step in sorted(manager.all_steps(), reverse=True):
        problem = step_problem(Path(manager.directory) / str(step))
        if problem is None:
            return step
        log.warning("%s: step %d is not whole (%s); using an older one", manager.directory,
                    step, problem)
    return None


def load_training_variables(workdir, step: int | None = None):
    """(metadata, {params, batch_stats} as numpy, step) of a training workdir's
    checkpoint (default: the latest), on whatever devices are here."""
    manager = training_manager(workdir, read_only=True)
    step = newest_whole_step(manager) if step is None else step
    if step is None:
        raise FileNotFoundError(f"{manager.directory}: no whole checkpoint (yet)")
    metadata = training_metadata(manager, step)
    manager.close()
    # Only params and batch_stats, as numpy: no optimiser state, no target
    # sharding, so any number of devices reads them.
    path = manager.directory / str(step) / "state"
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path)
    tree = getattr(tree, "item_metadata", tree)
    tree = getattr(tree, "tree", tree)
    wanted = {k: tree[k] for k in ("params", "batch_stats")}
    restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
        item=wanted, partial_restore=True,
        restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)))
    return metadata, {k: dict(restored[k]) for k in ("params", "batch_stats")}, step


def merge_init_variables(loaded: dict, target: dict, source: str) -> dict:
    """{params, batch_stats} for `target` (same structure, concrete or abstract) from
    the `loaded` variables of `source`. Every array of the target comes from the
    source, except a classifier (a `Logits` module) of another size, which keeps
    the target's (fresh) values; any other difference is an error naming the keys."""
    from flax import traverse_util

    from i3d_jax.convert.common import CheckpointMismatchError

    got = traverse_util.flatten_dict({k: loaded.get(k, {}) for k in ("params", "batch_stats")},
                                     sep="/")
    want = traverse_util.flatten_dict(target, sep="/")
    classifier = {k for k in want if "Logits" in k.split("/")}
    missing = sorted(set(want) - set(got) - classifier)
    unexpected = sorted(set(got) - set(want))
    misshaped = [(k, tuple(np.shape(got[k])), tuple(np.shape(want[k])))
                 for k in sorted(set(got) & set(want))
                 if np.shape(got[k]) != np.shape(want[k]) and k not in classifier]
    if missing or unexpected or misshaped:
        raise CheckpointMismatchError(f"init_from {source}", missing, unexpected, misshaped)
    merged, fresh = {}, []
    for key, value in want.items():
        if key in got and np.shape(got[key]) == np.shape(value):
            merged[key] = np.asarray(got[key], dtype=value.dtype)
        else:
            merged[key] = value
            fresh.append(key)
    log.info("init_from %s: loaded %d arrays; re-initialised %d (classifier): %s", source,
             len(merged) - len(fresh), len(fresh), ", ".join(fresh) or "none")
    return traverse_util.unflatten_dict(merged, sep="/")
