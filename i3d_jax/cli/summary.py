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


def checkpoint_summary(args) -> int:
    from i3d_jax.checkpoints import is_training_workdir, load_pretrained, load_training_variables
    from i3d_jax.models.stats import count_params, params_sha256

    if is_training_workdir(args.checkpoint):
        metadata, variables, step = load_training_variables(args.checkpoint)
    else:
        (metadata, variables), step = load_pretrained(args.checkpoint), None
    summary = {"arch": metadata.architecture, "params": count_params(variables), "step": step,
               "params_sha256": params_sha256(variables["params"])}
    if args.json:
        print(json.dumps(summary))
    else:
        at = f" at step {step}" if step is not None else ""
        print(f"{args.checkpoint}: {summary['arch']}{at}, {summary['params']:,} parameters, "
              f"sha256 of the parameters {summary['params_sha256']}")
    return 0


def cmd_summary(args) -> int:
    from i3d_jax.models.stats import summarise

    if args.checkpoint:
        return checkpoint_summary(args)
    if not args.arch:
        raise ValueError("give --arch NAME (an architecture) or --checkpoint DIR")
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
        "summary", help="parameters and FLOPs per clip of an architecture at the paper's input "
                        "size, or a checkpoint's parameters and their hash"
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--arch", choices=sorted(ARCHITECTURES),
                      help="the architecture to describe")
    what.add_argument("--checkpoint", default=None,
                      help="a training workdir (its latest step) or a convert/inflate checkpoint: "
                           "its architecture, parameter count, step and params_sha256")
    parser.add_argument("--json", action="store_true",
                        help='print {"arch", "params", "flops"}, or for --checkpoint '
                             '{"arch", "params", "step", "params_sha256"}')
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
