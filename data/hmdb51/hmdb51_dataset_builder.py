"""`tfds build data/hmdb51` from a checkout: the builder is i3d_jax.datasets.builders.hmdb51.

TFDS's `build` program wants a class defined in this file; the code, README.md
and CITATIONS.bib ship in the package, so an installed i3d_jax builds the same
dataset by name (`python -m i3d_jax.datasets.build hmdb51 ...`).
"""
from i3d_jax.datasets.builders.hmdb51 import hmdb51_dataset_builder as _package


class Builder(_package.Builder):
    __doc__ = _package.Builder.__doc__
    pkg_dir_path = _package.Builder.pkg_dir_path  # README.md, CITATIONS.bib
