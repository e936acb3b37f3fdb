"""The project's TFDS video datasets, registered with TFDS by importing this package.

The builders live in the repository's `data/` folder (one folder per
dataset, as `tfds build data/NAME` expects). Importing `i3d_jax.datasets`
makes them reachable by name, offline:

    import i3d_jax.datasets
    builder = tfds.builder("kinetics/400", data_dir=...)

Names: kinetics (configs 400, 600, 700 and *_flow), ucf101 and hmdb51
(configs 1, 2, 3 and *_flow), synthetic_motion. While this package is
imported, `ucf101` means this project's builder, not TFDS's catalogue one.
"""
from __future__ import annotations

import importlib
import logging

import i3d_jax.quiet_tf  # noqa: F401  (before anything imports TF)

import tensorflow_datasets as tfds  # noqa: E402  (TFDS imports TF only when it needs it)
from tensorflow_datasets.core import registered, visibility  # noqa: E402
from tensorflow_datasets.core.utils import gcs_utils  # noqa: E402

BUILDER_NAMES = ("kinetics", "ucf101", "hmdb51", "synthetic_motion")


def hide_gpus_from_tf() -> None:
    """TF only reads data here: it must never take a GPU (or its memory) from JAX."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TF's runtime already started: it must not have seen a GPU
        if tf.config.get_visible_devices("GPU"):
            logging.getLogger(__name__).warning(
                "TF started before i3d_jax could hide the GPUs from it; it may hold GPU memory")


class _DropTfdsInternalNotices(logging.Filter):
    # TFDS 4.9.10 itself reads its deprecated `dtype` fields and calls
    # `tf.map_fn(dtype=...)`, warning on every build and load; nothing a user
    # of these datasets can change.
    NOTICES = ("`FeatureConnector.dtype` is deprecated", "`TensorInfo.dtype` is deprecated",
               "calling map_fn_v2 (from tensorflow.python.ops.map_fn) with dtype is deprecated")

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg) % record.args if record.args else str(record.msg)
        return not any(notice in message for notice in self.NOTICES)


def make_tfds_offline() -> None:
    """TFDS never looks at GCS or the community index (both need the network).

    TFDS 4.9.10 already leaves GCS off by default (`gcs_utils._is_gcs_disabled`);
    this pins it, and hides community datasets, whose index TFDS reads from
    gs:// whenever it lists builders or explains an unknown name.
    """
    gcs_utils._is_gcs_disabled = True  # pylint: disable=protected-access
    visibility.set_availables([visibility.DatasetType.TFDS_PUBLIC])
    for name in ("absl", "tensorflow"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTfdsInternalNotices) for f in logger.filters):
            logger.addFilter(_DropTfdsInternalNotices())


def builder_class(name: str):
    """The builder class for one of BUILDER_NAMES (imports its module from `data/`)."""
    if name not in BUILDER_NAMES:
        raise KeyError(f"unknown dataset {name!r}; this project builds {', '.join(BUILDER_NAMES)}")
    with registered.skip_registration():
        module = importlib.import_module(f"i3d_jax.datasets.builders.{name}_dataset_builder")
    return module.Builder


class _ProjectBuilders(registered.DatasetBuilderProvider):
    """Serves this project's builders ahead of TFDS's own catalogue."""

    def has_dataset(self, name: str) -> bool:
        return name in BUILDER_NAMES

    def get_builder_cls(self, name: str):
        return builder_class(name)


def register() -> None:
    """Makes `tfds.builder(NAME)` find the builders in `data/` (idempotent)."""
    make_tfds_offline()
    providers = registered._DATASET_PROVIDER_REGISTRY  # pylint: disable=protected-access
    if not any(isinstance(p, _ProjectBuilders) for p in providers):
        registered.add_dataset_builder_provider(_ProjectBuilders(), index=0)


def builder(name: str, *, data_dir=None, **kwargs) -> tfds.core.DatasetBuilder:
    """`tfds.builder` for this project's datasets, never reaching for GCS."""
    register()
    return tfds.builder(name, data_dir=data_dir, try_gcs=False, **kwargs)


register()
