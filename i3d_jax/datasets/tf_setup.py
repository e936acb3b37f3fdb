"""TF and TFDS as this project runs them: on the CPU, offline and without TFDS's own notices.

A leaf module (it imports nothing of the project), so that the builders'
shared code can use it without importing `i3d_jax.datasets`.
"""
from __future__ import annotations

import logging

import i3d_jax.quiet_tf  # noqa: F401  (before anything imports TF)

# TFDS imports TF only when it needs it.
from tensorflow_datasets.core import visibility  # noqa: E402
from tensorflow_datasets.core.utils import gcs_utils  # noqa: E402


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
