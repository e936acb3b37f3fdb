"""Parameter counts and FLOPs per clip of the paper's architectures
(`i3d-jax summary`), at the input size the paper trains each on.

Parameters are those of the `params` collection (BatchNorm statistics are
not counted), after an init traced with `jax.eval_shape`. FLOPs are XLA's
cost analysis of the compiled inference forward pass on one clip; XLA
counts a multiply-add as two FLOPs. Nothing is run at full size: the
forward pass is only traced and compiled.
"""

from __future__ import annotations

import json
import math

import jax
import numpy as np

from i3d_jax.models import ARCHITECTURES, PAPER_TRAIN_INPUTS, build_model, paper_inputs
from i3d_jax.models.i3d import native_3d_convolutions


def count_params(variables) -> int:
    """Number of scalars in the `params` collection (concrete or abstract)."""
    return sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(variables["params"]))


def abstract_variables(model, inputs):
    """{params, batch_stats, ...} of `model` as ShapeDtypeStructs."""
    rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    return jax.eval_shape(lambda x: model.init(rngs, x, train=False), inputs)


def forward_flops(model, variables, inputs) -> float:
    """XLA's FLOP count of `model`'s inference forward pass on `inputs`."""
    with native_3d_convolutions():  # count the convolutions, not their CPU rewrite
        compiled = (
            jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, inputs).compile()
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


def _describe_input(architecture: str) -> str:
    shapes = PAPER_TRAIN_INPUTS[architecture]
    fmt = lambda s: "x".join(map(str, s))  # noqa: E731
    if isinstance(shapes, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in shapes.items())
    return fmt(shapes)


def cmd_summary(args) -> int:
    fields = {}
    if args.num_classes is not None:
        fields["num_classes"] = args.num_classes
    if args.width_multiplier != 1.0:
        fields["width_multiplier"] = args.width_multiplier
    summary = summarise(args.arch, **fields)
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{summary['arch']}: {summary['params']:,} parameters, "
            f"{summary['flops'] / 1e9:.1f} GFLOPs per clip ({_describe_input(args.arch)}; "
            "XLA cost analysis of the inference forward pass)"
        )
    return 0


def register(subparsers):
    parser = subparsers.add_parser(
        "summary", help="parameters and FLOPs per clip of an architecture at the paper's input size"
    )
    parser.add_argument("--arch", required=True, choices=sorted(ARCHITECTURES))
    parser.add_argument("--json", action="store_true", help='print {"arch", "params", "flops"}')
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classes (default: the architecture's, 400 for Kinetics)",
    )
    parser.add_argument(
        "--width-multiplier",
        type=float,
        default=1.0,
        help="scale every layer's channels (the paper's models are 1)",
    )
    parser.set_defaults(func=cmd_summary)
