"""Linen modules: the shared layers (`layers.py`), the Inception-v1 trunk
at rank 2 or 3 (`inception.py`), and one file per architecture family.

Every architecture is called as `model.apply(variables, inputs, train=...)`
and returns logits [batch, num_classes]; `inputs` is one array for a single
stream and `{"rgb": ..., "flow": ...}` for the two-stream models. All of
them have the fields of `layers.Architecture` (num_classes, dropout_rate,
batch_norm_scale, dtype, width_multiplier, kernels).
`paper_inputs(name)` gives the input the paper trains each one on.
"""

import jax
import jax.numpy as jnp

from i3d_jax.kernels import resolve as resolve_kernels
from i3d_jax.models.conv3d import Conv3DNet
from i3d_jax.models.convnet_lstm import ConvNetLSTM
from i3d_jax.models.i3d import ENDPOINTS, InceptionI3d
from i3d_jax.models.inception_v1 import ENDPOINTS_2D, InceptionV1
from i3d_jax.models.layers import Architecture
from i3d_jax.models.two_stream import TwoStream, TwoStreamFused, TwoStreamI3D

ARCHITECTURES = {
    "i3d": InceptionI3d,
    "inception_v1": InceptionV1,
    "convnet_lstm": ConvNetLSTM,
    "conv3d": Conv3DNet,
    "two_stream": TwoStream,
    "two_stream_fused": TwoStreamFused,
    "two_stream_i3d": TwoStreamI3D,
}

# Input shapes per example, as the paper trains (section 2 and Table 1):
# I3D 64 frames of 224x224; ConvNet+LSTM 25 frames; 3D-ConvNet 16x112x112;
# Two-Stream 1 RGB frame and 10 flow frames; 3D-Fused 5 RGB frames and 50
# flow frames; Inception-v1 an ImageNet image.
PAPER_TRAIN_INPUTS = {
    "i3d": (64, 224, 224, 3),
    "inception_v1": (224, 224, 3),
    "convnet_lstm": (25, 224, 224, 3),
    "conv3d": (16, 112, 112, 3),
    "two_stream": {"rgb": (1, 224, 224, 3), "flow": (10, 224, 224, 2)},
    "two_stream_fused": {"rgb": (5, 224, 224, 3), "flow": (50, 224, 224, 2)},
    "two_stream_i3d": {"rgb": (64, 224, 224, 3), "flow": (64, 224, 224, 2)},
}


def paper_inputs(architecture: str, batch: int = 1, dtype=jnp.float32):
    """Abstract inputs (jax.ShapeDtypeStruct) of the paper's training size."""
    if architecture not in PAPER_TRAIN_INPUTS:
        raise ValueError(
            f"unknown architecture {architecture!r}; known: {sorted(PAPER_TRAIN_INPUTS)}"
        )
    return jax.tree.map(
        lambda shape: jax.ShapeDtypeStruct((batch, *shape), dtype),
        PAPER_TRAIN_INPUTS[architecture],
        is_leaf=lambda x: isinstance(x, tuple),
    )


def build_model(architecture: str, kernels="auto", **kwargs):
    """Returns the linen module named `architecture` with `kwargs` as fields,
    computing with `kernels`: a `Kernels` set, or "auto" / "xla" / "cpu" for
    the set `i3d_jax.kernels.choose_kernels` gives (once per process; "auto"
    is what the `i3d-jax` program runs too)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}"
        )
    return ARCHITECTURES[architecture](kernels=resolve_kernels(kernels), **kwargs)


__all__ = [
    "ARCHITECTURES",
    "ENDPOINTS",
    "ENDPOINTS_2D",
    "PAPER_TRAIN_INPUTS",
    "Architecture",
    "Conv3DNet",
    "ConvNetLSTM",
    "InceptionI3d",
    "InceptionV1",
    "TwoStream",
    "TwoStreamFused",
    "TwoStreamI3D",
    "build_model",
    "paper_inputs",
]
