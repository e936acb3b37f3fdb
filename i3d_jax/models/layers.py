"""What every architecture shares: the conv -> BatchNorm -> ReLU unit, the
SAME max-pool, the Inception block, the BatchNorm every network builds, and
the fields every architecture has.

What they compute with comes in as a `Kernels` set (`kernels` field,
`i3d_jax.kernels`): lax's own operations by default, or the CPU forms that
`i3d_jax.kernels.choose_kernels` picks. Nothing here reads the backend.

Everything follows DeepMind's released TF I3D where it changes the numbers:
TF "SAME" padding (the extra pixel goes at the end), BatchNorm with decay
0.999 and eps 1e-3 and, in the Inception units, no scale, max-pools that pad
with -inf. Shapes are [batch, (time,) height, width, channels].
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
from flax.linen import dtypes as flax_dtypes
import jax.numpy as jnp
from jax import lax

from i3d_jax.kernels.xla import XLA, Kernels

BATCH_NORM_DECAY = 0.999
BATCH_NORM_EPSILON = 1e-3

class BatchNorm(nn.Module):
    """The BatchNorm of every architecture: flax's nn.BatchNorm (the same
    variables, statistics, running averages and output), with TF's constants
    and float32 parameters and statistics whatever the compute dtype. Callers
    give `use_running_average`, `dtype`, `name`, `kernels` and, where the
    released model has none, `use_scale=False`.

    A train step's batch statistics and their gradient are `kernels.batch_norm`'s
    where the set has one (the CPU set's fast reductions), else flax's
    formulas, differentiated by JAX.
    """

    use_running_average: bool
    momentum: float = BATCH_NORM_DECAY
    epsilon: float = BATCH_NORM_EPSILON
    use_scale: bool = True
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernels: Kernels = XLA

    @nn.compact
    def __call__(self, x):
        features = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
        scale = (self.param("scale", nn.initializers.ones, features, self.param_dtype)
                 if self.use_scale else None)
        bias = (self.param("bias", nn.initializers.zeros, features, self.param_dtype)
                if self.use_bias else None)
        out_dtype = flax_dtypes.canonicalize_dtype(
            x, *(p for p in (scale, bias) if p is not None), dtype=self.dtype)
        compute = jnp.promote_types(self.dtype or x.dtype, jnp.float32)
        scale_or_one = jnp.ones(features, compute) if scale is None else scale
        bias_or_zero = jnp.zeros(features, compute) if bias is None else bias
        if not self.use_running_average and self.kernels.batch_norm is not None:
            y, mean, var = self.kernels.batch_norm(x.astype(compute), scale_or_one, bias_or_zero,
                                                   self.epsilon)
        else:
            if self.use_running_average:
                mean, var = ra_mean.value, ra_var.value
            else:
                reduced = tuple(range(x.ndim - 1))
                mean = jnp.mean(x.astype(compute), reduced)
                var = jnp.maximum(0.0, jnp.mean(jnp.square(x.astype(compute)), reduced)
                                  - jnp.square(mean))
            y = (x - mean) * (lax.rsqrt(var + self.epsilon) * scale_or_one) + bias_or_zero
        if not self.use_running_average and not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y.astype(out_dtype)


def scaled_width(channels: int, width_multiplier: float) -> int:
    """Channels of a layer in a model `width_multiplier` times as wide (at least 1)."""
    return max(1, int(round(channels * width_multiplier)))


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
    kernels: Kernels = XLA
    batch_norm_momentum: float = BATCH_NORM_DECAY
    frozen_batch_norm: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        rank = len(self.kernel_shape)
        x = nn.Conv(
            self.features,
            tuple(self.kernel_shape),
            strides=tuple(self.strides or (1,) * rank),
            padding="SAME",
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=self.kernel_init,
            conv_general_dilated=self.kernels.conv_general_dilated,
            name=f"conv_{rank}d",
        )(x)
        if self.use_batch_norm:
            x = BatchNorm(
                use_running_average=not train or self.frozen_batch_norm,
                momentum=self.batch_norm_momentum,
                use_scale=self.batch_norm_scale,
                dtype=self.dtype,
                kernels=self.kernels,
                name="batch_norm",
            )(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def max_pool_same(x, window: Sequence[int], strides: Sequence[int], kernels: Kernels = XLA):
    """TF SAME max-pool (padding counts as -inf, as in TF), `kernels`' form."""
    return kernels.max_pool(x, tuple(window), tuple(strides))


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


class InceptionBlock(nn.Module):
    """Four branches (1x1; 1x1 -> 3x3; 1x1 -> "5x5" as 3x3; pool -> 1x1),
    concatenated; `rank` 3 for I3D, 2 for Inception-v1.

    `channels` are the branches' output channels in the order (b0 1x1, b1
    1x1, b1 3x3, b2 1x1, b2 3x3, b3 1x1 after the pool).
    """

    channels: Sequence[int]
    batch_norm_scale: bool = False
    dtype: Any = jnp.float32
    rank: int = 3
    kernels: Kernels = XLA
    batch_norm_momentum: float = BATCH_NORM_DECAY
    frozen_batch_norm: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        b0, b1a, b1b, b2a, b2b, b3 = self.channels
        names = branch_units(self.rank)
        ones, threes = (1,) * self.rank, (3,) * self.rank
        unit = functools.partial(
            Unit, batch_norm_scale=self.batch_norm_scale, dtype=self.dtype,
            kernels=self.kernels, batch_norm_momentum=self.batch_norm_momentum,
            frozen_batch_norm=self.frozen_batch_norm,
        )
        branch_0 = unit(b0, ones, name=names[0])(x, train)
        branch_1 = unit(b1a, ones, name=names[1])(x, train)
        branch_1 = unit(b1b, threes, name=names[2])(branch_1, train)
        branch_2 = unit(b2a, ones, name=names[3])(x, train)
        branch_2 = unit(b2b, threes, name=names[4])(branch_2, train)
        branch_3 = max_pool_same(x, threes, ones, self.kernels)
        branch_3 = unit(b3, ones, name=names[5])(branch_3, train)
        return jnp.concatenate([branch_0, branch_1, branch_2, branch_3], axis=-1)


class Architecture(nn.Module):
    """The fields every architecture has; the architectures subclass it.

    Called as `model.apply(variables, inputs, train=..., return_endpoints=...)`.
    """

    num_classes: int = 400
    # Before the classifier; architectures whose paper names none use I3D's.
    dropout_rate: float = 0.5
    # Whether the conv units' BatchNorm learns a scale. The released I3D and
    # TF-slim's Inception-v1 have none; pytorch-i3d's and torchvision's ports do.
    batch_norm_scale: bool = False
    # Compute dtype (e.g. jnp.bfloat16); parameters stay float32.
    dtype: Any = jnp.float32
    # Scales every layer's channels (not the classes); below 1 only for fast
    # tests. At 1 the model is the paper's.
    width_multiplier: float = 1.0
    # What it computes with (`i3d_jax.kernels`): XLA's own operations unless
    # given a set, as `build_model` and the trainer do (`choose_kernels`).
    kernels: Kernels = XLA
    # BatchNorm's running averages: new = momentum * old + (1 - momentum) * batch.
    # TF's 0.999 takes thousands of steps to forget the initial (0, 1); a short
    # run wants less.
    batch_norm_momentum: float = BATCH_NORM_DECAY
    # Running averages only, in training too: they normalise and never change
    # (fine-tuning with small batches). Dropout still follows `train`.
    frozen_batch_norm: bool = False

    @nn.nowrap
    def width(self, channels: int) -> int:
        return scaled_width(channels, self.width_multiplier)

    @nn.nowrap
    def unit_fields(self) -> dict:
        """The fields a Unit or InceptionBlock takes from its architecture."""
        return {"batch_norm_scale": self.batch_norm_scale, "dtype": self.dtype,
                "kernels": self.kernels, "batch_norm_momentum": self.batch_norm_momentum,
                "frozen_batch_norm": self.frozen_batch_norm}

    @nn.nowrap
    def trunk_fields(self) -> dict:
        """The fields a sub-network (an Inception trunk) takes from its architecture."""
        return {**self.unit_fields(), "width_multiplier": self.width_multiplier}
