"""TF-slim's ImageNet `inception_v1` checkpoint (`InceptionV1/...` variables,
BatchNorm without gamma, 1001 classes of which class 0 is "background")."""

from __future__ import annotations

import numpy as np

from i3d_jax.convert.common import gather_units, tf_variable_scope
from i3d_jax.convert.inception_v1 import inception_v1_units

SCOPE = "InceptionV1/"
BACKGROUND_CLASSES = 1001
_LEAF = {
    "kernel": "weights",
    "bias": "biases",
    "beta": "BatchNorm/beta",
    "gamma": "BatchNorm/gamma",
    "mean": "BatchNorm/moving_mean",
    "var": "BatchNorm/moving_variance",
}
# Saved beside the weights by slim's training loop, not part of the model.
_OPTIMISER_SUFFIXES = ("/Momentum", "/RMSProp", "/RMSProp_1", "/ExponentialMovingAverage")


def _ignorable(name: str) -> bool:
    return name == "global_step" or name.endswith(_OPTIMISER_SUFFIXES)


def drop_background_class(variables):
    """1001 slim logits -> the 1000 ImageNet classes (class 0 is background)."""
    logits = variables["params"]["Logits"]["conv_2d"]
    if logits["bias"].shape[0] != BACKGROUND_CLASSES:
        return variables
    params = dict(variables["params"])
    params["Logits"] = {
        "conv_2d": {"kernel": logits["kernel"][..., 1:], "bias": logits["bias"][1:]}
    }
    return {**variables, "params": params}


def convert_tf_slim(arrays: dict[str, np.ndarray], origin: str = "checkpoint"):
    """{params, batch_stats} of our InceptionV1 from slim's variables."""
    variables = gather_units(
        arrays,
        lambda unit, leaf: f"{SCOPE}{tf_variable_scope(unit, rank=2)}/{_LEAF[leaf]}",
        lambda leaf, a: a if leaf == "kernel" else a.reshape(-1),
        _ignorable,
        origin,
        units=inception_v1_units(),
        conv="conv_2d",
    )
    return drop_background_class(variables)
