"""`tfds build`, offline and without apache-beam: the same command and flags.

    python -m i3d_jax.datasets.build kinetics --config=400 \
        --manual_dir=/path/to/kinetics --data_dir=/path/to/tensorflow_datasets

A dataset is named (kinetics, ucf101, hmdb51, synthetic_motion: the builders
installed with the package) or, in a checkout, given as its folder
(`data/kinetics`).

TFDS 4.9.10's `tfds` program imports all its commands before it parses
anything, and two of them need apache-beam and mlcroissant; this runs TFDS's
own `build` command alone. Where both are installed, `tfds build ...` works
the same.
"""
from __future__ import annotations


import i3d_jax.quiet_tf  # noqa: E402,F401  (before anything imports TF)

from absl import app  # noqa: E402
from tensorflow_datasets.scripts.cli import build, cli_utils  # noqa: E402

import i3d_jax.datasets  # noqa: E402,F401  (offline TFDS; the project's builders by name)

_parse_flags = cli_utils.make_flags_parser(build.Args, description=__doc__.splitlines()[0])


def main(args: build.Args) -> None:
    i3d_jax.datasets.hide_gpus_from_tf()
    args.execute()


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
