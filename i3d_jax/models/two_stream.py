"""The paper's two-stream architectures: an RGB and an optical-flow network.

All three take `inputs = {"rgb": [B, T, H, W, 3], "flow": [B, T', H, W, 2]}`
and return logits [B, num_classes]; with `return_endpoints=True` they also
return each stream's logits ("rgb_logits", "flow_logits"), so a trainer can
give each stream its own loss.

- `TwoStream`: Inception-v1 on single RGB frames and on stacks of 10 flow
  frames (20 channels); T RGB snapshots pair with T stacks (T' = 10 T).
  Logits are averaged over snapshots and then over the two streams, so one
  snapshot trains end to end and 25 evenly spaced ones test.
- `TwoStreamFused`: 5 RGB frames (10 apart) and their 5 flow stacks (T' =
  50) through two Inception-v1 trunks up to Mixed_5c; the two 5x7x7x1024
  grids are concatenated and fused by a 3x3x3 conv of 512 channels with
  BatchNorm and ReLU, a 3x3x3 max-pool (stride 2) and a classifier on the
  average over the pooled grid. The new layers start from Gaussian noise.
- `TwoStreamI3D`: an RGB and a flow I3D (T' = T), logits averaged with
  equal weights.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from i3d_jax.models.i3d import InceptionI3d
from i3d_jax.models.inception_v1 import InceptionV1
from i3d_jax.models.layers import Architecture, Unit, max_pool_same

FLOW_FRAMES_PER_STACK = 10
# "Gaussian noise" for the fusion layers; BatchNorm follows the conv, so
# its scale matters little there.
FUSION_INIT = nn.initializers.normal(stddev=0.01)


def stack_flow(flow, frames_per_stack: int):
    """[B, S * L, H, W, 2] flow frames -> [B, S, H, W, 2 L] stacks of L frames.

    Channels go frame by frame: (x_0, y_0, x_1, y_1, ...).
    """
    batch, frames, height, width, channels = flow.shape
    if frames % frames_per_stack:
        raise ValueError(
            f"flow has {frames} frames (shape {flow.shape}); expected a multiple of "
            f"{frames_per_stack}, one stack of {frames_per_stack} per RGB frame"
        )
    stacks = flow.reshape(
        batch, frames // frames_per_stack, frames_per_stack, height, width, channels
    )
    stacks = jnp.moveaxis(stacks, 2, 4)  # [B, S, H, W, L, 2]
    return stacks.reshape(
        batch, frames // frames_per_stack, height, width, frames_per_stack * channels
    )


def _streams(inputs, flow_frames_per_stack: int, arch: str):
    """RGB frames [B, S, H, W, 3] and flow stacks [B, S, H, W, 2 L], checked."""
    if not isinstance(inputs, dict) or set(inputs) != {"rgb", "flow"}:
        raise ValueError(
            f"{arch} expects inputs {{'rgb': ..., 'flow': ...}}, got {type(inputs).__name__}"
            + (f" with keys {sorted(inputs)}" if isinstance(inputs, dict) else "")
        )
    rgb, flow = inputs["rgb"], inputs["flow"]
    if rgb.ndim != 5 or flow.ndim != 5:
        raise ValueError(
            f"{arch} expects rgb and flow as [batch, time, height, width, channels], "
            f"got {rgb.shape} and {flow.shape}"
        )
    stacks = stack_flow(flow, flow_frames_per_stack)
    if stacks.shape[:4] != rgb.shape[:4]:
        batch, frames, height, width = rgb.shape[:4]
        raise ValueError(
            f"{arch}: rgb {rgb.shape} needs flow "
            f"[{batch}, {frames * flow_frames_per_stack}, {height}, {width}, 2] "
            f"({flow_frames_per_stack} flow frames per RGB frame), got {flow.shape}"
        )
    return rgb, stacks


def _per_frame(network, frames, train):
    """Runs a 2D `network` on [B, S, H, W, C] as B*S images; [B, S, ...] out."""
    batch, snapshots = frames.shape[:2]
    out = network(frames.reshape(batch * snapshots, *frames.shape[2:]), train)
    return out.reshape(batch, snapshots, *out.shape[1:])


class TwoStream(Architecture):
    dropout_rate: float = 0.2  # Inception-v1's
    flow_frames_per_stack: int = FLOW_FRAMES_PER_STACK

    @nn.compact
    def __call__(self, inputs, train: bool, return_endpoints: bool = False):
        rgb, flow = _streams(inputs, self.flow_frames_per_stack, "two_stream")
        stream = lambda name: InceptionV1(  # noqa: E731
            self.num_classes, dropout_rate=self.dropout_rate, **self.trunk_fields(), name=name
        )
        rgb_logits = _per_frame(stream("rgb"), rgb, train).mean(axis=1)
        flow_logits = _per_frame(stream("flow"), flow, train).mean(axis=1)
        logits = (rgb_logits + flow_logits) / 2
        if return_endpoints:
            return logits, {"rgb_logits": rgb_logits, "flow_logits": flow_logits, "Logits": logits}
        return logits


class TwoStreamFused(Architecture):
    """The paper names no dropout here: `dropout_rate` is I3D's, before the classifier."""

    flow_frames_per_stack: int = FLOW_FRAMES_PER_STACK
    fusion_features: int = 512

    @nn.compact
    def __call__(self, inputs, train: bool, return_endpoints: bool = False):
        rgb, flow = _streams(inputs, self.flow_frames_per_stack, "two_stream_fused")
        trunk = lambda name: InceptionV1(  # noqa: E731
            final_endpoint="Mixed_5c", **self.trunk_fields(), name=name
        )
        # Two [B, 5, 7, 7, 1024] grids (time from the snapshots) -> one of 2048 channels.
        grid = jnp.concatenate(
            [_per_frame(trunk("rgb"), rgb, train), _per_frame(trunk("flow"), flow, train)], axis=-1
        )
        fused = Unit(
            self.width(self.fusion_features),
            (3, 3, 3),
            **self.unit_fields(),
            kernel_init=FUSION_INIT,
            name="Conv3d_fusion_3x3",
        )(grid, train)
        pooled = max_pool_same(fused, (3, 3, 3), (2, 2, 2), self.kernels)
        features = pooled.mean(axis=(1, 2, 3))
        dropped = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
        logits = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=FUSION_INIT,
            name="Logits",
        )(dropped).astype(jnp.float32)
        if return_endpoints:
            return logits, {
                "Mixed_5c": grid,
                "Conv3d_fusion_3x3": fused,
                "AvgPool": features,
                "Logits": logits,
            }
        return logits


class TwoStreamI3D(Architecture):

    @nn.compact
    def __call__(self, inputs, train: bool, return_endpoints: bool = False):
        # The flow I3D takes one 2-channel frame per RGB frame: no stacking.
        rgb, flow = _streams(inputs, 1, "two_stream_i3d")
        stream = lambda name: InceptionI3d(  # noqa: E731
            self.num_classes, dropout_rate=self.dropout_rate, **self.trunk_fields(), name=name
        )
        rgb_logits = stream("rgb")(rgb, train)
        flow_logits = stream("flow")(flow, train)
        logits = (rgb_logits + flow_logits) / 2
        if return_endpoints:
            return logits, {"rgb_logits": rgb_logits, "flow_logits": flow_logits, "Logits": logits}
        return logits
