"""Inflated 3D Inception-v1 (I3D), as released by DeepMind (kinetics-i3d).

Every detail that changes the numbers follows the released TF model:
TF "SAME" padding (the extra pixel goes at the end), BatchNorm without a
scale (eps 1e-3, decay 0.999), no temporal pooling in the first two
max-pools, a 2x7x7 VALID average pool, dropout, a 1x1x1 logits conv with a
bias, and logits averaged over time. The layers are in `layers.py`, the
trunk and head it shares with the 2D Inception-v1 in `inception.py`.

Shapes are [batch, time, height, width, channels] everywhere.
"""
from __future__ import annotations

# The layers used to live here; converters, tests and benchmarks import them
# from this module.
from i3d_jax.models.inception import INCEPTION_CHANNELS, InceptionNetwork, inception_trunk
from i3d_jax.models.layers import (
    BATCH_NORM_DECAY,
    BATCH_NORM_EPSILON,
    BRANCH_UNITS,
    InceptionBlock,
    Unit,
    branch_units,
    max_pool_same,
    scaled_width,
)

# In network order. `final_endpoint` may name any of them.
ENDPOINTS = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
    "AvgPool",  # [B, T', 1024]: the 2x7x7 average pool, spatially squeezed
    "LogitsPerTime",  # [B, T', num_classes]
    "Logits",  # [B, num_classes]: averaged over time
)

# I3D's name for its units (the 3D case of Unit).
Unit3D = Unit


class InceptionI3d(InceptionNetwork):
    """I3D on [B, T, H, W, C] clips in [-1, 1] (RGB) or flow in [-1, 1] (C=2).

    Call with `train` to choose batch statistics and dropout. Returns the
    output of `final_endpoint` ([B, num_classes] logits by default); with
    `return_endpoints=True` returns `(output, {endpoint: value})` holding every
    endpoint up to `final_endpoint`.

    The final average pool is 2x7x7 VALID as released; where the feature map
    is smaller than that (short clips, small frames) the window is clamped
    to the map, so any T >= 1 and any frame size give an output.
    """

    RANK = 3
    ENDPOINTS = ENDPOINTS
    INPUT_LAYOUT = "I3D expects [batch, time, height, width, channels]"


__all__ = [
    "BATCH_NORM_DECAY",
    "BATCH_NORM_EPSILON",
    "BRANCH_UNITS",
    "ENDPOINTS",
    "INCEPTION_CHANNELS",
    "InceptionBlock",
    "InceptionI3d",
    "Unit",
    "Unit3D",
    "branch_units",
    "inception_trunk",
    "max_pool_same",
    "scaled_width",
]
