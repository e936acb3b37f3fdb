"""DeepMind's released kinetics-i3d TensorFlow checkpoints."""
from __future__ import annotations

import numpy as np

from i3d_jax.convert.common import gather_units, tf_variable_scope

# TF variable scopes of the released checkpoints; Kinetics-600 has none.
STREAM_SCOPES = {"rgb": "RGB/inception_i3d/", "flow": "Flow/inception_i3d/"}
_LEAF = {
    "kernel": "conv_3d/w",
    "bias": "conv_3d/b",
    "beta": "batch_norm/beta",
    "gamma": "batch_norm/gamma",
    "mean": "batch_norm/moving_mean",
    "var": "batch_norm/moving_variance",
}


def deepmind_scope(unit: tuple[str, ...]) -> str:
    return tf_variable_scope(unit, rank=3)


def read_tf_checkpoint(prefix: str) -> dict[str, np.ndarray]:
    """All variables of a TF checkpoint (path without .index/.data suffix)."""
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    prefix = str(prefix)
    for suffix in (".index", ".meta"):
        if prefix.endswith(suffix):
            prefix = prefix[: -len(suffix)]
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as e:
        raise ValueError(f"{prefix}: not a readable TensorFlow checkpoint ({e})") from None
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def detect_scope(names, stream: str | None, origin: str) -> str:
    present = {s: scope for s, scope in STREAM_SCOPES.items() if any(n.startswith(scope) for n in names)}
    if not present:
        return ""  # Kinetics-600 layout: variables at the top level
    if stream is None:
        if len(present) > 1:
            raise ValueError(f"{origin} holds streams {sorted(present)}: choose one with --stream")
        return next(iter(present.values()))
    if stream not in present:
        raise ValueError(f"{origin} has no {stream!r} stream; it holds {sorted(present)}")
    return present[stream]


def _ignorable(name: str) -> bool:
    # Optimiser slots and counters saved beside the weights.
    return name.endswith("/Momentum") or name.split("/")[-1] in ("global_step", "beta1_power", "beta2_power")


def convert_deepmind(arrays: dict[str, np.ndarray], stream: str | None = None, origin: str = "checkpoint"):
    scope = detect_scope(arrays, stream, origin)
    source = {n[len(scope):]: a for n, a in arrays.items() if n.startswith(scope)}
    others = [n for n in arrays if not n.startswith(scope) and not _ignorable(n)]
    if scope and others:
        # Variables of the other stream are not ours to report.
        others = [n for n in others if not any(n.startswith(s) for s in STREAM_SCOPES.values())]
    source.update({n: arrays[n] for n in others})
    return gather_units(
        source,
        lambda unit, leaf: f"{deepmind_scope(unit)}/{_LEAF[leaf]}",
        lambda leaf, a: a.reshape(-1) if leaf not in ("kernel",) else a,
        _ignorable,
        origin,
    )
