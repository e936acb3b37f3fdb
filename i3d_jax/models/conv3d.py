"""The paper's 3D-ConvNet: C3D with BatchNorm, trained from scratch.

Eight 3x3x3 convs (C3D's widths 64, 128, 256, 256, 512, 512, 512, 512),
five 2x2x2 max-pools, two fully connected layers of 4096 and a classifier.
Unlike C3D, the first pool has temporal stride 2 (so 16 frames need less
memory), and BatchNorm follows every conv and fully connected layer. On the
paper's 16x112x112 clips the last pool leaves 1x4x4x512, the 8192 features
that fc6 reads: that layer alone holds 34M of the model's 79M parameters,
and its size fixes the clip shape the model accepts.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from i3d_jax.kernels.xla import XLA, Kernels
from i3d_jax.models.layers import BATCH_NORM_DECAY, Architecture, BatchNorm, Unit, max_pool_same

# (name, channels) of each conv; a 2x2x2 pool follows the last conv of each stage.
CONV_STAGES = (
    (("conv1a", 64),),
    (("conv2a", 128),),
    (("conv3a", 256), ("conv3b", 256)),
    (("conv4a", 512), ("conv4b", 512)),
    (("conv5a", 512), ("conv5b", 512)),
)
FC_FEATURES = 4096


class DenseUnit(nn.Module):
    """Dense -> BatchNorm -> ReLU."""

    features: int
    dtype: Any = jnp.float32
    batch_norm_momentum: float = BATCH_NORM_DECAY
    frozen_batch_norm: bool = False
    kernels: Kernels = XLA

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(
            self.features, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32, name="dense"
        )(x)
        x = BatchNorm(use_running_average=not train or self.frozen_batch_norm,
                      momentum=self.batch_norm_momentum, dtype=self.dtype,
                      kernels=self.kernels, name="batch_norm")(x)
        # ReLU as a select, which XLA:CPU's YNNPACK fusion does not take: with
        # --xla_cpu_experimental_ynn_fusion_type=dot it fuses fc6 -> fc7 ->
        # Logits through max(x, 0) into one subgraph that runs an order of
        # magnitude slower. The same values and gradient,
        # NaN included (it stays NaN, so a bad batch still shows in the loss).
        return jnp.where(x <= 0, 0, x)


class Conv3DNet(Architecture):
    """C3D-like 3D ConvNet on clips [B, T, H, W, 3] of `clip_shape` (T, H, W).

    Returns logits [B, num_classes], or `(logits, endpoints)` with
    `return_endpoints=True` (each stage's pool output, fc6, fc7, Logits).
    `dropout_rate` is C3D's dropout after fc6 and fc7; `batch_norm_scale`
    is the conv units' (the fully connected units' BatchNorm has a scale).
    """

    # (T, H, W) to check every call against; None takes what the first call
    # (init) gets. fc6 is sized from it either way: the paper's 16x112x112
    # (PAPER_TRAIN_INPUTS) gives the paper's 79M parameters.
    clip_shape: Sequence[int] | None = None

    @nn.compact
    def __call__(self, x, train: bool, return_endpoints: bool = False):
        if x.ndim != 5 or (self.clip_shape is not None
                           and tuple(x.shape[1:4]) != tuple(self.clip_shape)):
            raise ValueError(
                f"conv3d expects clips [batch, {', '.join(map(str, self.clip_shape or 'THW'))}, "
                f"channels] (its fc6 is sized for them), got shape {x.shape}"
            )
        endpoints = {}
        x = x.astype(self.dtype)
        for stage, convs in enumerate(CONV_STAGES, start=1):
            for name, channels in convs:
                x = Unit(self.width(channels), (3, 3, 3), **self.unit_fields(), name=name)(x, train)
            x = max_pool_same(x, (2, 2, 2), (2, 2, 2), self.kernels)
            endpoints[f"pool{stage}"] = x
        x = x.reshape(x.shape[0], -1)
        for name in ("fc6", "fc7"):
            x = DenseUnit(self.width(FC_FEATURES), dtype=self.dtype,
                          batch_norm_momentum=self.batch_norm_momentum,
                          frozen_batch_norm=self.frozen_batch_norm, kernels=self.kernels,
                          name=name)(x, train)
            endpoints[name] = x
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = nn.Dense(
            self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="Logits"
        )(x).astype(jnp.float32)
        endpoints["Logits"] = logits
        return (logits, endpoints) if return_endpoints else logits
