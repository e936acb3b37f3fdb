"""The `Kernels` type, and `XLA`: lax's own operations, what every TPU and GPU
runs and the models' default."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True, eq=False)
class Kernels:
    """What a model and its train step compute with (compared by identity: each
    set is built once per process)."""

    name: str  # "xla" or "cpu"
    description: str  # the forms, for the log
    # nn.Conv's `conv_general_dilated`; None is lax's.
    conv_general_dilated: Callable | None
    # (x [N, *spatial, C], window, strides) -> TF SAME max-pool, padding as -inf.
    max_pool: Callable
    # (x, scale, bias, epsilon) -> (y, mean, var) on the batch's statistics,
    # differentiable; None: flax's formulas, differentiated by JAX.
    batch_norm: Callable | None
    # The global norm of a gradient tree (float32 or wider).
    global_norm: Callable
    # guard(keep, update, state): `update(state)` where the scalar `keep`, else `state`.
    guard: Callable


def xla_max_pool(x, window, strides):
    """TF SAME max-pool as one lax reduce-window (padding counts as -inf, as in TF)."""
    return nn.max_pool(x, tuple(window), strides=tuple(strides), padding="SAME")


def select_guard(keep, update: Callable[[Any], Any], state):
    """`update(state)` where `keep`, else `state`, as a select: XLA:GPU's
    conditionals have waited on the host for their predicate, which would hold
    up the rest of the step."""
    return jax.tree.map(lambda new, old: jnp.where(keep, new, old), update(state), state)


XLA = Kernels(name="xla", description="lax's convolutions, pools and BatchNorm",
              conv_general_dilated=None, max_pool=xla_max_pool, batch_norm=None,
              global_norm=optax.global_norm, guard=select_guard)
