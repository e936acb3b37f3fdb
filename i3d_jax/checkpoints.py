"""Orbax checkpoints of model variables with the metadata needed to rebuild
the model (architecture, stream, classes, label names).

A pretrained checkpoint is a directory written by `save_pretrained`:
`variables/` ({params, batch_stats}, Orbax StandardSave) and `metadata/`
(JSON). Orbax writes into a temporary directory and renames it when done, so
an interrupted save never leaves a checkpoint that looks complete.
"""
from __future__ import annotations

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

log = logging.getLogger(__name__)

STREAM_CHANNELS = {"rgb": 3, "flow": 2}


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

    def model_fields(self) -> dict:
        return {"num_classes": self.num_classes, "batch_norm_scale": self.batch_norm_scale}

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
    """Returns (metadata, variables) of a checkpoint written by save_pretrained."""
    directory = Path(directory).absolute()
    metadata = load_metadata(directory)
    restored = _checkpointer().restore(
        directory,
        args=ocp.args.Composite(variables=ocp.args.StandardRestore()),
    )
    variables = jax.tree.map(np.asarray, dict(restored["variables"]))
    return metadata, variables
