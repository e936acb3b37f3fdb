"""`tfds build data/synthetic_motion` from a checkout.

The builder is i3d_jax.datasets.builders.synthetic_motion.

TFDS's `build` program wants a class defined in this file; the code and README.md
ship in the package, so an installed i3d_jax builds the same
dataset by name (`python -m i3d_jax.datasets.build synthetic_motion ...`).
"""
from i3d_jax.datasets.builders.synthetic_motion import synthetic_motion_dataset_builder as _package


class Builder(_package.Builder):
    __doc__ = _package.Builder.__doc__
    pkg_dir_path = _package.Builder.pkg_dir_path  # README.md
