"""Inflated 3D Inception-v1 (I3D), as released by DeepMind (kinetics-i3d).

Every detail that changes the numbers follows the released TF model:
TF "SAME" padding (the extra pixel goes at the end), BatchNorm without a
scale (eps 1e-3, decay 0.999), no temporal pooling in the first two
max-pools, a 2x7x7 VALID average pool, dropout, a 1x1x1 logits conv with a
bias, and logits averaged over time.

Shapes are [batch, time, height, width, channels] everywhere.
"""
from __future__ import annotations

import contextlib
import contextvars

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# In network order. `final_endpoint` may name any of them; layers after it are
# neither built nor given parameters (cheap feature extraction).
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

# Names of the six units of a block, matching DeepMind's variable scopes
# (`Branch_1/Conv3d_0b_3x3` becomes `Branch_1_Conv3d_0b_3x3`: linen names
# cannot hold a slash).
def branch_units(rank: int = 3) -> tuple[str, ...]:
    """The six unit names of a block; the 2D Inception-v1 says Conv2d."""
    conv = f"Conv{rank}d"
    return (
        f"Branch_0_{conv}_0a_1x1",
        f"Branch_1_{conv}_0a_1x1",
        f"Branch_1_{conv}_0b_3x3",
        f"Branch_2_{conv}_0a_1x1",
        f"Branch_2_{conv}_0b_3x3",
        f"Branch_3_{conv}_0b_1x1",
    )


BRANCH_UNITS = branch_units(3)

BATCH_NORM_DECAY = 0.999
BATCH_NORM_EPSILON = 1e-3


def scaled_width(channels: int, width_multiplier: float) -> int:
    """Channels of a layer in a model `width_multiplier` times as wide (at least 1)."""
    return max(1, int(round(channels * width_multiplier)))


_NDHWC = ("NDHWC", "DHWIO", "NDHWC")


def conv3d_as_2d(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """`lax.conv_general_dilated` for channels-last 3D SAME convolutions, computed
    as one 2D convolution over the temporal taps stacked on the channel axis.

    The same sums in another order (results agree to float32 rounding). XLA:CPU
    runs 3D convolutions far slower than 2D ones: I3D's 7x7x7 first conv on a
    64x224x224 clip takes 2.35 s natively and 0.34 s this way on 2 cores, so
    I3D uses it on CPU. Anything else goes to lax unchanged.
    """
    plain = (
        lhs.ndim == 5
        and padding == "SAME"
        and not any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
        and feature_group_count == 1
        and not kwargs
        and dimension_numbers == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NDHWC)
    )
    if not plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
            precision=precision, **kwargs)
    taps, height, width, channels, features = rhs.shape
    batch, frames = lhs.shape[:2]
    stride = window_strides[0]
    out_frames = -(-frames // stride)
    # TF SAME along time: the extra step of padding goes at the end.
    total = max((out_frames - 1) * stride + taps - frames, 0)
    lhs = jnp.pad(lhs, ((0, 0), (total // 2, total - total // 2), (0, 0), (0, 0), (0, 0)))
    stacked = jnp.concatenate(
        [lax.slice_in_dim(lhs, t, t + (out_frames - 1) * stride + 1, stride, axis=1) for t in range(taps)],
        axis=-1,
    )
    stacked = stacked.reshape(batch * out_frames, *stacked.shape[2:])
    kernel = jnp.transpose(rhs, (1, 2, 0, 3, 4)).reshape(height, width, taps * channels, features)
    out = lax.conv_general_dilated(
        stacked, kernel, tuple(window_strides[1:]), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision)
    return out.reshape(batch, out_frames, *out.shape[1:])


_NATIVE_3D_CONVOLUTIONS = contextvars.ContextVar("native_3d_convolutions", default=False)


@contextlib.contextmanager
def native_3d_convolutions():
    """Traced inside this, 3D convs lower to lax's own 3D convolution on every
    backend: for counting FLOPs, where conv3d_as_2d's explicit temporal
    padding would add taps that fall on padding."""
    token = _NATIVE_3D_CONVOLUTIONS.set(True)
    try:
        yield
    finally:
        _NATIVE_3D_CONVOLUTIONS.reset(token)


def _conv_general_dilated_for(rank: int):
    if rank == 3 and jax.default_backend() == "cpu" and not _NATIVE_3D_CONVOLUTIONS.get():
        return conv3d_as_2d
    return None  # flax's default, lax.conv_general_dilated


class Unit(nn.Module):
    """Conv -> BatchNorm -> ReLU with TF SAME padding, 2D or 3D.

    The rank is the kernel's (len(kernel_shape)); the conv is named `conv_3d`
    or `conv_2d` after it, so I3D and its 2D Inception-v1 source share units
    and differ only in the names that inflation maps one to the other.
    """

    features: int
    kernel_shape: Sequence[int] = (1, 1, 1)
    strides: Sequence[int] | None = None  # default: 1 along every axis
    use_batch_norm: bool = True
    batch_norm_scale: bool = False
    use_bias: bool = False
    activation: Callable[[Any], Any] | None = nn.relu
    dtype: Any = jnp.float32
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x, train: bool):
        rank = len(self.kernel_shape)
        x = nn.Conv(
            self.features,
            tuple(self.kernel_shape),
            strides=tuple(self.strides or (1,) * len(self.kernel_shape)),
            padding="SAME",
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=self.kernel_init,
            conv_general_dilated=_conv_general_dilated_for(rank),
            name=f"conv_{rank}d",
        )(x)
        if self.use_batch_norm:
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=BATCH_NORM_DECAY,
                epsilon=BATCH_NORM_EPSILON,
                use_scale=self.batch_norm_scale,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                name="batch_norm",
            )(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


# I3D's name for its units (the 3D case of Unit), kept for existing callers.
Unit3D = Unit


def max_pool_same(x, window: Sequence[int], strides: Sequence[int]):
    """TF SAME max-pool (reduce_window pads with -inf, as TF does).

    A 3D pool runs as a temporal pool then a spatial one: the same maximum
    over the same window, exactly, and 2-4x faster on XLA:CPU than one 3D
    reduce_window.
    """
    window, strides = tuple(window), tuple(strides)
    if len(window) == 3 and (window[0], strides[0]) != (1, 1):
        x = nn.max_pool(x, (window[0], 1, 1), strides=(strides[0], 1, 1), padding="SAME")
        window, strides = (1, *window[1:]), (1, *strides[1:])
    return nn.max_pool(x, window, strides=strides, padding="SAME")


class InceptionBlock(nn.Module):
    """Four branches (1x1; 1x1 -> 3x3; 1x1 -> "5x5" as 3x3; pool -> 1x1),
    concatenated; `rank` 3 for I3D, 2 for Inception-v1."""

    channels: Sequence[int]
    batch_norm_scale: bool = False
    dtype: Any = jnp.float32
    rank: int = 3

    @nn.compact
    def __call__(self, x, train: bool):
        b0, b1a, b1b, b2a, b2b, b3 = self.channels
        names = branch_units(self.rank)
        ones, threes = (1,) * self.rank, (3,) * self.rank
        unit = lambda f, k, name: Unit(  # noqa: E731
            f, k, batch_norm_scale=self.batch_norm_scale, dtype=self.dtype, name=name
        )
        branch_0 = unit(b0, ones, names[0])(x, train)
        branch_1 = unit(b1a, ones, names[1])(x, train)
        branch_1 = unit(b1b, threes, names[2])(branch_1, train)
        branch_2 = unit(b2a, ones, names[3])(x, train)
        branch_2 = unit(b2b, threes, names[4])(branch_2, train)
        branch_3 = max_pool_same(x, threes, ones)
        branch_3 = unit(b3, ones, names[5])(branch_3, train)
        return jnp.concatenate([branch_0, branch_1, branch_2, branch_3], axis=-1)


def inception_trunk(x, train: bool, *, rank: int, finish, width_multiplier: float = 1.0,
                    batch_norm_scale: bool = False, dtype: Any = jnp.float32):
    """Inception-v1 from its first conv to Mixed_5c, in 2D (TF-slim) or inflated
    3D (I3D) form.

    Called inside a module's compact `__call__`, so the layers are that
    module's own (named as TF-slim / DeepMind name them). `finish(endpoint,
    value)` records each endpoint and says whether to stop there. Returns
    (output, stopped).
    """
    conv, pool = f"Conv{rank}d", ("MaxPool3d" if rank == 3 else "MaxPool")

    def shape(temporal, spatial):  # the 2D layer drops the time axis
        return (temporal, spatial, spatial)[3 - rank:]

    def unit(features, kernel, strides, name):
        return Unit(scaled_width(features, width_multiplier), kernel, strides,
                    batch_norm_scale=batch_norm_scale, dtype=dtype, name=name)

    stem = [
        (f"{conv}_1a_7x7", 64, shape(7, 7), shape(2, 2)),
        (f"{pool}_2a_3x3", None, shape(1, 3), shape(1, 2)),  # no temporal pooling
        (f"{conv}_2b_1x1", 64, shape(1, 1), shape(1, 1)),
        (f"{conv}_2c_3x3", 192, shape(3, 3), shape(1, 1)),
        (f"{pool}_3a_3x3", None, shape(1, 3), shape(1, 2)),
    ]
    for name, features, window, strides in stem:
        if features is None:
            x = max_pool_same(x, window, strides)
        else:
            x = unit(features, window, strides, name)(x, train)
        if finish(name, x):
            return x, True
    pools = {
        "Mixed_4b": (f"{pool}_4a_3x3", shape(3, 3), shape(2, 2)),
        "Mixed_5b": (f"{pool}_5a_2x2", shape(2, 2), shape(2, 2)),
    }
    for block, channels in INCEPTION_CHANNELS.items():
        if block in pools:
            pool_name, window, strides = pools[block]
            x = max_pool_same(x, window, strides)
            if finish(pool_name, x):
                return x, True
        x = InceptionBlock(
            tuple(scaled_width(c, width_multiplier) for c in channels),
            batch_norm_scale=batch_norm_scale,
            dtype=dtype,
            rank=rank,
            name=block,
        )(x, train)
        if finish(block, x):
            return x, True
    return x, False


class InceptionI3d(nn.Module):
    """I3D on [B, T, H, W, C] clips in [-1, 1] (RGB) or flow in [-1, 1] (C=2).

    Call with `train` to choose batch statistics and dropout. Returns the
    output of `final_endpoint` ([B, num_classes] logits by default); with
    `return_endpoints=True` returns `(output, {endpoint: value})` holding every
    endpoint up to `final_endpoint`.

    The final average pool is 2x7x7 VALID as released; where the feature map
    is smaller than that (short clips, small frames) the window is clamped
    to the map, so any T >= 1 and any frame size give an output.
    """

    num_classes: int = 400
    final_endpoint: str = "Logits"
    dropout_rate: float = 0.5
    batch_norm_scale: bool = False
    # Compute dtype (e.g. jnp.bfloat16); parameters stay float32.
    dtype: Any = jnp.float32
    # Scales every layer's channels (not the classes); below 1 only for fast
    # tests. At 1 the model is the released one.
    width_multiplier: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool, return_endpoints: bool = False):
        if self.final_endpoint not in ENDPOINTS:
            raise ValueError(
                f"final_endpoint {self.final_endpoint!r} is not one of {ENDPOINTS}"
            )
        if x.ndim != 5:
            raise ValueError(
                f"I3D expects [batch, time, height, width, channels], got shape {x.shape}"
            )
        endpoints = {}
        x = x.astype(self.dtype)

        def finish(name, value):
            endpoints[name] = value
            return name == self.final_endpoint

        def result(value):
            return (value, endpoints) if return_endpoints else value

        x, stopped = inception_trunk(
            x, train, rank=3, finish=finish, width_multiplier=self.width_multiplier,
            batch_norm_scale=self.batch_norm_scale, dtype=self.dtype)
        if stopped:
            return result(x)

        _, t, h, w, _ = x.shape
        window = (min(2, t), min(7, h), min(7, w))
        x = nn.avg_pool(x, window, strides=(1, 1, 1), padding="VALID")
        # Spatial squeeze: [B, T', 1, 1, C] -> [B, T', C] (frames of 224 give 1x1).
        features = jnp.mean(x, axis=(2, 3))
        if finish("AvgPool", features.astype(jnp.float32)):
            return result(features.astype(jnp.float32))
        x = nn.Dropout(rate=self.dropout_rate, deterministic=not train)(x)
        x = Unit(
            self.num_classes,
            (1, 1, 1),
            use_batch_norm=False,
            use_bias=True,
            activation=None,
            dtype=self.dtype,
            name="Logits",
        )(x, train)
        per_time = jnp.mean(x, axis=(2, 3)).astype(jnp.float32)
        if finish("LogitsPerTime", per_time):
            return result(per_time)
        logits = jnp.mean(per_time, axis=1)
        finish("Logits", logits)
        return result(logits)
