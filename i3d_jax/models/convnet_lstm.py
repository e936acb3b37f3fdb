"""The paper's ConvNet+LSTM: Inception-v1 on every frame, its last average
pool (1024 features) through BatchNorm into an LSTM of 512 units, and a
classifier on every time step.

The paper trains with a loss at every time step (`LogitsPerTime` among the
endpoints) and predicts from the last step (the output). Clips are 25
frames at 5 fps (one in five of 25 fps) to train, 50 to test.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from i3d_jax.models.inception_v1 import InceptionV1
from i3d_jax.models.layers import Architecture, BatchNorm


class ConvNetLSTM(Architecture):
    """Clips [B, T, H, W, 3] in [-1, 1] -> logits [B, num_classes] of the last step.

    With `return_endpoints=True` returns `(logits, endpoints)`: "AvgPool"
    [B, T, 1024], "LSTM" [B, T, 512], "LogitsPerTime" [B, T, num_classes].
    `batch_norm_scale` is the Inception-v1 units'; the BatchNorm on its
    features has a scale.
    """

    lstm_features: int = 512

    @nn.compact
    def __call__(self, x, train: bool, return_endpoints: bool = False):
        if x.ndim != 5:
            raise ValueError(
                "convnet_lstm expects clips [batch, time, height, width, channels], "
                f"got shape {x.shape}"
            )
        batch, time = x.shape[:2]
        # Every frame through the same 2D network, as one batch.
        features = InceptionV1(
            final_endpoint="AvgPool", **self.trunk_fields(), name="InceptionV1"
        )(x.reshape(batch * time, *x.shape[2:]), train)
        features = features.reshape(batch, time, -1)
        normalised = BatchNorm(use_running_average=not train or self.frozen_batch_norm,
                               momentum=self.batch_norm_momentum, dtype=self.dtype,
                               kernels=self.kernels, name="batch_norm")(
            features.astype(self.dtype)
        )
        cell = nn.OptimizedLSTMCell(
            self.width(self.lstm_features),
            dtype=self.dtype,
            param_dtype=jnp.float32,
        )
        hidden = nn.RNN(cell, name="LSTM")(normalised)
        dropped = nn.Dropout(self.dropout_rate, deterministic=not train)(hidden)
        per_time = nn.Dense(
            self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="Logits"
        )(dropped).astype(jnp.float32)
        logits = per_time[:, -1]
        if return_endpoints:
            return logits, {
                "AvgPool": features,
                "LSTM": hidden,
                "LogitsPerTime": per_time,
                "Logits": logits,
            }
        return logits
