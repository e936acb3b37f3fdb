"""The project's TFDS builders, one sub-package each, laid out as TFDS lays out its own.

`NAME/NAME_dataset_builder.py` defines the builder (a class named `Builder`,
so TFDS names it NAME), beside its README.md (the description) and
CITATIONS.bib. They ship in the wheel; `data/NAME/` in a checkout only lets
TFDS's `tfds build data/NAME` find them. Import them through
`i3d_jax.datasets.builder_class`, which keeps them out of TFDS's global
registry (where `ucf101` would clash with TFDS's own) and serves them to
`tfds.builder`.
"""
