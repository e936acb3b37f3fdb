"""The project's TFDS video datasets, registered with TFDS by importing this package.

The builders ship in the package (`i3d_jax/datasets/builders/NAME/`; a
checkout's `data/NAME/` lets `tfds build data/NAME` find them). Importing
`i3d_jax.datasets` makes them reachable by name, offline:

    import i3d_jax.datasets
    builder = tfds.builder("kinetics/400", data_dir=...)

Names: kinetics (configs 400, 600, 700 and *_flow), ucf101 and hmdb51
(configs 1, 2, 3 and *_flow), synthetic_motion. While this package is
imported, `ucf101` means this project's builder, not TFDS's catalogue one.
"""
from __future__ import annotations

import importlib
import importlib.resources

# First: TF quiet before anything imports it. hide_gpus_from_tf: for the input pipeline.
from i3d_jax.datasets.tf_setup import hide_gpus_from_tf, make_tfds_offline  # noqa: F401

import tensorflow_datasets as tfds  # (TFDS imports TF only when it needs it)
from tensorflow_datasets.core import registered

BUILDER_NAMES = ("kinetics", "ucf101", "hmdb51", "synthetic_motion", "video_folder")
_BUILDERS_PACKAGE = "i3d_jax.datasets.builders"


def builder_names() -> list[str]:
    """The datasets whose builders this installation has (`builders/NAME/NAME_dataset_builder.py`
    in the installed package), sorted."""
    root = importlib.resources.files(_BUILDERS_PACKAGE)
    return sorted(d.name for d in root.iterdir()
                  if d.is_dir() and d.joinpath(f"{d.name}_dataset_builder.py").is_file())


def builder_class(name: str):
    """The builder class for one of BUILDER_NAMES (from `builders/NAME/NAME_dataset_builder.py`)."""
    if name not in BUILDER_NAMES:
        raise KeyError(f"unknown dataset {name!r}; this project builds {', '.join(BUILDER_NAMES)}")
    module_name = f"{_BUILDERS_PACKAGE}.{name}.{name}_dataset_builder"
    with registered.skip_registration():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name not in (module_name, f"{_BUILDERS_PACKAGE}.{name}"):
                raise  # the builder is there; something it imports is not
            raise ModuleNotFoundError(
                f"the {name!r} builder ({module_name}) is missing from this installation of "
                f"i3d_jax (found: {', '.join(builder_names()) or 'none'})", name=e.name) from e
    return module.Builder


class _ProjectBuilders(registered.DatasetBuilderProvider):
    """Serves this project's builders ahead of TFDS's own catalogue."""

    def has_dataset(self, name: str) -> bool:
        return name in BUILDER_NAMES

    def get_builder_cls(self, name: str):
        return builder_class(name)


def register() -> None:
    """Makes `tfds.builder(NAME)` find this project's builders (idempotent)."""
    make_tfds_offline()
    providers = registered._DATASET_PROVIDER_REGISTRY  # pylint: disable=protected-access
    if not any(isinstance(p, _ProjectBuilders) for p in providers):
        registered.add_dataset_builder_provider(_ProjectBuilders(), index=0)


def builder(name: str, *, data_dir=None, **kwargs) -> tfds.core.DatasetBuilder:
    """`tfds.builder` for this project's datasets, never reaching for GCS."""
    register()
    return tfds.builder(name, data_dir=data_dir, try_gcs=False, **kwargs)


register()
