"""config.init_from: a new run's weights from elsewhere, never a resume.

Named weights ("kinetics400-rgb"), a `convert` / `inflate` checkpoint
directory or another training workdir give every variable (a classifier of
another size is re-initialised); "inception_v1:FORMAT:PATH" is the paper's
ImageNet bootstrap for any architecture with Inception-v1 layers (inflated
where 3D), FORMAT one of `i3d_jax.inflate.SOURCES`.
"""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from absl import logging

from i3d_jax import checkpoints

INCEPTION_V1_PREFIX = "inception_v1:"


def read_init_source(source: str) -> dict:
    """The variables of config.init_from: named weights ("kinetics400-rgb"), a
    `convert` / `inflate` checkpoint directory or a training workdir."""
    if Path(source).exists():
        return checkpoints.load_pretrained(source)[1]
    from i3d_jax.weights import PRETRAINED, load_weights

    if source not in PRETRAINED:
        raise FileNotFoundError(
            f"config.init_from {source!r} is neither a checkpoint directory, nor one of the "
            f"named weights ({', '.join(PRETRAINED)}), nor {INCEPTION_V1_PREFIX}FORMAT:PATH")
    return load_weights(source)[1]


def init_variables(config, fresh: dict) -> dict:
    """config.init_from's variables for the state's fresh {params, batch_stats}."""
    source = config.init_from
    if source.startswith(INCEPTION_V1_PREFIX):
        from i3d_jax.inflate import SOURCES, init_from_inception_v1, read_source

        fmt, _, path = source.removeprefix(INCEPTION_V1_PREFIX).partition(":")
        if fmt not in SOURCES or not path:
            raise ValueError(f"config.init_from {source!r}: expected {INCEPTION_V1_PREFIX}"
                             f"FORMAT:PATH with FORMAT one of {', '.join(SOURCES)}")
        if not Path(path).exists() and not Path(path + ".index").exists():
            raise FileNotFoundError(f"config.init_from {source!r}: {path} not found")
        inception_v1, _ = read_source(fmt, path)
        variables = init_from_inception_v1(config.model.architecture,
                                           jax.tree.map(np.asarray, fresh), inception_v1,
                                           origin=f"{fmt} Inception-v1 {path}")
        logging.info("init_from %s: the Inception-v1 layers from ImageNet (inflated where 3D), "
                     "the rest freshly initialised", source)
        return variables
    return checkpoints.merge_init_variables(read_init_source(source), fresh, source)

