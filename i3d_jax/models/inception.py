"""Inception-v1 at any rank: TF-slim's 2D ImageNet network (rank 2,
`inception_v1.py`) and DeepMind's inflated I3D (rank 3, `i3d.py`) are the
same trunk and head with the time axis removed or added.

The layers and their names are TF-slim's / DeepMind's (`Conv2d_1a_7x7` /
`Conv3d_1a_7x7`, `Mixed_3b`, ...), which is all inflation needs to pair
every 3D unit with its 2D source.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from i3d_jax.kernels.xla import XLA, Kernels
from i3d_jax.models.layers import (
    BATCH_NORM_DECAY, Architecture, InceptionBlock, Unit, max_pool_same, scaled_width)

# Output channels of each Inception block's branches, in the order
# (b0 1x1, b1 1x1, b1 3x3, b2 1x1, b2 3x3, b3 1x1 after the pool).
INCEPTION_CHANNELS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def inception_trunk(x, train: bool, *, rank: int, finish, width_multiplier: float = 1.0,
                    batch_norm_scale: bool = False, dtype: Any = jnp.float32,
                    kernels: Kernels = XLA, batch_norm_momentum: float = BATCH_NORM_DECAY,
                    frozen_batch_norm: bool = False):
    """Inception-v1 from its first conv to Mixed_5c, in 2D (TF-slim) or inflated
    3D (I3D) form.

    Called inside a module's compact `__call__`, so the layers are that
    module's own. `finish(endpoint, value)` records each endpoint and says
    whether to stop there. Returns (output, stopped).
    """
    conv, pool = f"Conv{rank}d", ("MaxPool3d" if rank == 3 else "MaxPool")
    unit_fields = {"batch_norm_scale": batch_norm_scale, "dtype": dtype, "kernels": kernels,
                   "batch_norm_momentum": batch_norm_momentum,
                   "frozen_batch_norm": frozen_batch_norm}

    def shape(temporal, spatial):  # the 2D layer drops the time axis
        return (temporal, spatial, spatial)[3 - rank:]

    stem = [
        (f"{conv}_1a_7x7", 64, shape(7, 7), shape(2, 2)),
        (f"{pool}_2a_3x3", None, shape(1, 3), shape(1, 2)),  # no temporal pooling
        (f"{conv}_2b_1x1", 64, shape(1, 1), shape(1, 1)),
        (f"{conv}_2c_3x3", 192, shape(3, 3), shape(1, 1)),
        (f"{pool}_3a_3x3", None, shape(1, 3), shape(1, 2)),
    ]
    for name, features, window, strides in stem:
        if features is None:
            x = max_pool_same(x, window, strides, kernels)
        else:
            x = Unit(scaled_width(features, width_multiplier), window, strides, **unit_fields,
                     name=name)(x, train)
        if finish(name, x):
            return x, True
    pools = {
        "Mixed_4b": (f"{pool}_4a_3x3", shape(3, 3), shape(2, 2)),
        "Mixed_5b": (f"{pool}_5a_2x2", shape(2, 2), shape(2, 2)),
    }
    for block, channels in INCEPTION_CHANNELS.items():
        if block in pools:
            pool_name, window, strides = pools[block]
            x = max_pool_same(x, window, strides, kernels)
            if finish(pool_name, x):
                return x, True
        x = InceptionBlock(
            tuple(scaled_width(c, width_multiplier) for c in channels),
            rank=rank,
            **unit_fields,
            name=block,
        )(x, train)
        if finish(block, x):
            return x, True
    return x, False


class InceptionNetwork(Architecture):
    """Inception-v1 of rank `RANK`: the trunk, an average pool (2x7x7 in 3D,
    7x7 in 2D, VALID), dropout, a 1x1 logits conv with a bias, and in 3D
    logits averaged over time.

    Returns the output of `final_endpoint` ([B, num_classes] logits by
    default); with `return_endpoints=True`, `(output, {endpoint: value})`
    holding every endpoint up to `final_endpoint` (layers after it are
    neither built nor given parameters: cheap feature extraction). Where the
    last feature map is smaller than the pool window, the window is clamped
    to the map, so any clip length and frame size give an output.
    """

    final_endpoint: str = "Logits"

    # Set by the subclasses: the kernel rank, the endpoints in network order,
    # and the input layout named in shape errors.
    RANK = None
    ENDPOINTS = ()
    INPUT_LAYOUT = ""

    @nn.compact
    def __call__(self, x, train: bool, return_endpoints: bool = False):
        if self.final_endpoint not in self.ENDPOINTS:
            raise ValueError(
                f"final_endpoint {self.final_endpoint!r} is not one of {self.ENDPOINTS}"
            )
        if x.ndim != self.RANK + 2:
            raise ValueError(f"{self.INPUT_LAYOUT}, got shape {x.shape}")
        endpoints = {}

        def finish(name, value):
            endpoints[name] = value
            return name == self.final_endpoint

        def result(value):
            return (value, endpoints) if return_endpoints else value

        x, stopped = inception_trunk(
            x.astype(self.dtype), train, rank=self.RANK, finish=finish, **self.trunk_fields()
        )
        if stopped:
            return result(x)

        spatial = x.shape[-3:-1]
        window = ((min(2, x.shape[1]),) if self.RANK == 3 else ()) + tuple(min(7, s) for s in spatial)
        x = nn.avg_pool(x, window, strides=(1,) * self.RANK, padding="VALID")
        # Spatial squeeze ([..., 1, 1, C] -> [..., C] for frames of 224).
        features = jnp.mean(x, axis=(-3, -2)).astype(jnp.float32)
        if finish("AvgPool", features):
            return result(features)
        x = nn.Dropout(rate=self.dropout_rate, deterministic=not train)(x)
        x = Unit(
            self.num_classes,
            (1,) * self.RANK,
            use_batch_norm=False,
            use_bias=True,
            activation=None,
            dtype=self.dtype,
            kernels=self.kernels,
            name="Logits",
        )(x, train)
        logits = jnp.mean(x, axis=(-3, -2)).astype(jnp.float32)
        if self.RANK == 3:
            if finish("LogitsPerTime", logits):
                return result(logits)
            logits = jnp.mean(logits, axis=1)
        finish("Logits", logits)
        return result(logits)
