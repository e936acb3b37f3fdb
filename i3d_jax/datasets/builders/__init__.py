"""The builder modules of the repository's `data/NAME/NAME_dataset_builder.py`.

This package's path is those folders, so every builder module has an
importable name (`i3d_jax.datasets.builders.kinetics_dataset_builder`) in any
process, which Beam workers unpickling a builder's functions need. Import them
through `i3d_jax.datasets.builder_class`, which keeps them out of TFDS's global
registry (where `ucf101` would clash with TFDS's own) and serves them to
`tfds.builder`.
Set I3D_JAX_BUILDERS_DIR where `data/` is not beside the package.
"""
from __future__ import annotations

import os
from pathlib import Path

BUILDERS_DIR = Path(os.environ.get("I3D_JAX_BUILDERS_DIR",
                                   Path(__file__).resolve().parents[3] / "data"))

if not BUILDERS_DIR.is_dir():
    raise ImportError(
        f"dataset builders not found: {BUILDERS_DIR} is not a folder (expected the repository's "
        "data/ folder; set I3D_JAX_BUILDERS_DIR to it)"
    )

# A package spread over data/*: each builder folder is a search location.
__path__ = [str(d) for d in sorted(BUILDERS_DIR.iterdir())  # noqa: F811
            if d.is_dir() and any(d.glob("*_dataset_builder.py"))]

