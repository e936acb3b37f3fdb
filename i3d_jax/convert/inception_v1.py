"""What the 2D Inception-v1 converters share: its unit layout, and the check
of a converted tree against our 2D model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from i3d_jax.convert.common import check_fits, checked_stream, i3d_units, params_and_stats
from i3d_jax.models.inception_v1 import InceptionV1
from i3d_jax.models.stats import abstract_variables


def inception_v1_units() -> list[tuple[str, ...]]:
    """Every conv unit of Inception-v1 as its path in our parameter tree:
    I3D's with Conv3d -> Conv2d (the logits unit keeps its name)."""
    return [tuple(part.replace("Conv3d", "Conv2d") for part in unit) for unit in i3d_units()]


def expected_inception_v1_variables(model, in_channels: int):
    """Abstract {params, batch_stats} of a 2D `model` (shapes only, no compute)."""
    images = jax.ShapeDtypeStruct((1, 224, 224, in_channels), jnp.float32)
    return params_and_stats(abstract_variables(model, images))


def infer_inception_v1_fields(variables) -> dict:
    """num_classes, in_channels and batch_norm_scale of an Inception-v1 tree."""
    params = variables["params"]
    return {
        "num_classes": int(np.shape(params["Logits"]["conv_2d"]["bias"])[0]),
        "in_channels": int(np.shape(params["Conv2d_1a_7x7"]["conv_2d"]["kernel"])[2]),
        "batch_norm_scale": "scale" in params["Conv2d_1a_7x7"]["batch_norm"],
    }


def check_inception_v1(variables, src: str, stream: str | None = None) -> tuple[dict, str]:
    """(model fields, stream) of a converted 2D Inception-v1 tree, checked:
    its first conv's channels give the stream (RGB and flow weights are both
    accepted), which must be `stream` if one is asked for, and the tree must
    fit our 2D model with those fields."""
    fields = infer_inception_v1_fields(variables)
    channel_stream = checked_stream(
        fields["in_channels"], stream, src,
        hint="; `i3d-jax inflate --stream flow` makes a flow I3D from RGB weights",
    )
    model = InceptionV1(num_classes=fields["num_classes"], batch_norm_scale=fields["batch_norm_scale"])
    check_fits(variables, expected_inception_v1_variables(model, fields["in_channels"]), src)
    return fields, channel_stream
