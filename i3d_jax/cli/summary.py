"""`i3d-jax summary`: parameters and FLOPs per clip of an architecture, at the
input size the paper trains it on (see `i3d_jax.models.stats`)."""

from __future__ import annotations

import json

from i3d_jax.models import ARCHITECTURES, PAPER_TRAIN_INPUTS


def _describe_input(architecture: str) -> str:
    shapes = PAPER_TRAIN_INPUTS[architecture]
    fmt = lambda s: "x".join(map(str, s))  # noqa: E731
    if isinstance(shapes, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in shapes.items())
    return fmt(shapes)


def cmd_summary(args) -> int:
    from i3d_jax.models.stats import summarise

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
    parser.add_argument("--arch", required=True, choices=sorted(ARCHITECTURES),
                        help="the architecture to describe")
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
