"""Parameter counts and FLOPs per clip of the paper's architectures, and the
abstract variables (shapes only) every checker and converter starts from.

Parameters are those of the `params` collection (BatchNorm statistics are
not counted), after an init traced with `jax.eval_shape`. FLOPs are XLA's
cost analysis of the compiled inference forward pass on one clip; XLA
counts a multiply-add as two FLOPs. Nothing is run at full size: the
forward pass is only traced and compiled.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from i3d_jax.kernels.xla import XLA
from i3d_jax.models import build_model, paper_inputs


def abstract_variables(model, inputs):
    """{params, batch_stats, ...} of `model` as ShapeDtypeStructs: its init
    traced on `inputs` (arrays or ShapeDtypeStructs), nothing computed."""
    rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    return jax.eval_shape(lambda x: model.init(rngs, x, train=False), inputs)


def count_params(variables) -> int:
    """Number of scalars in the `params` collection (concrete or abstract)."""
    return sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(variables["params"]))


def forward_flops(model, variables, inputs) -> float:
    """XLA's FLOP count of `model`'s inference forward pass on `inputs`."""
    # Count the convolutions, not their CPU rewrite (whose explicit temporal
    # padding XLA would count as taps).
    native = model.clone(kernels=XLA)
    compiled = (
        jax.jit(lambda v, x: native.apply(v, x, train=False)).lower(variables, inputs).compile()
    )
    cost = compiled.cost_analysis()
    # Older JAX returns one dict per device program.
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost["flops"])


def summarise(architecture: str, **fields) -> dict:
    """{"arch", "params", "flops"} of `architecture` at the paper's training input."""
    model = build_model(architecture, **fields)
    inputs = paper_inputs(architecture)
    variables = abstract_variables(model, inputs)
    return {
        "arch": architecture,
        "params": count_params(variables),
        "flops": forward_flops(model, variables, inputs),
    }


def params_sha256(params) -> str:
    """sha256 over the parameter values: float32 bytes of every leaf, keys in sorted
    order (with their names), so two runs compare bitwise by one string."""
    import hashlib

    from flax import traverse_util

    digest = hashlib.sha256()
    for key, value in sorted(traverse_util.flatten_dict(params, sep="/").items()):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(np.asarray(value, np.float32)).tobytes())
    return digest.hexdigest()
