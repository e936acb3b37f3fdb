"""2D Inception-v1 (GoogLeNet with BatchNorm) in TF-slim's layout: the
ImageNet network that I3D is inflated from, and the per-frame trunk of the
ConvNet+LSTM, Two-Stream and 3D-Fused architectures.

It is I3D with the time axis removed: the same trunk and head
(`inception.py`) at rank 2 (TF SAME padding, BatchNorm without scale by default, eps 1e-3,
the "5x5" branch as 3x3), 3x3 max-pools of stride 2, a 7x7 average pool,
dropout and a 1x1 logits conv with a bias. Parameter names are I3D's with
`Conv3d` -> `Conv2d` and `conv_3d` -> `conv_2d`, which is all inflation
needs to pair every 3D unit with its 2D source.

Images are [batch, height, width, channels]: RGB in [-1, 1], or a stack of
flow frames on the channel axis (20 channels for 10 frames of (x, y)).
"""

from __future__ import annotations

from i3d_jax.models.inception import InceptionNetwork

# TF-slim's endpoint names, in network order.
ENDPOINTS_2D = (
    "Conv2d_1a_7x7",
    "MaxPool_2a_3x3",
    "Conv2d_2b_1x1",
    "Conv2d_2c_3x3",
    "MaxPool_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
    "AvgPool",  # [B, 1024]: the 7x7 average pool, spatially squeezed
    "Logits",  # [B, num_classes]
)


def endpoint_3d(name: str) -> str:
    """The I3D endpoint inflated from the 2D endpoint `name`."""
    return name.replace("Conv2d", "Conv3d").replace("MaxPool_", "MaxPool3d_")


class InceptionV1(InceptionNetwork):
    """Inception-v1 on images [B, H, W, C].

    Returns the output of `final_endpoint` ([B, num_classes] logits by
    default); with `return_endpoints=True`, `(output, {endpoint: value})`.
    Where the last feature map is smaller than 7x7 the average pool covers
    the whole map, so small test images give an output too.
    """

    num_classes: int = 1000
    # TF-slim trains it with dropout_keep_prob 0.8.
    dropout_rate: float = 0.2

    RANK = 2
    ENDPOINTS = ENDPOINTS_2D
    INPUT_LAYOUT = "Inception-v1 expects images [batch, height, width, channels]"
