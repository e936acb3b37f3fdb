"""`i3d-jax export`: a model out of JAX, as StableHLO, a TF SavedModel with
TF-Hub's signature, or pytorch-i3d's state_dict (the work is `i3d_jax.export`)."""
from __future__ import annotations

import json
import sys

from i3d_jax.cli.common import STREAMS


def _load(args):
    from i3d_jax.checkpoints import load_pretrained

    if args.checkpoint:
        metadata, variables = load_pretrained(args.checkpoint)
        name = args.checkpoint
    else:
        from i3d_jax.weights import load_weights

        name = args.weights or "kinetics400-rgb"
        metadata, variables = load_weights(name)
    if args.stream and args.stream != metadata.stream:
        raise ValueError(f"--stream {args.stream} given, but {name} holds the "
                         f"{metadata.stream} stream")
    if not metadata.source:
        metadata.source = name
    return metadata, variables


def cmd_export(args) -> int:
    from i3d_jax import export

    metadata, variables = _load(args)
    print(f"exporting {metadata.architecture} ({metadata.stream}, {metadata.num_classes} "
          f"classes) as {args.format} to {args.out}", file=sys.stderr)
    if args.format == "stablehlo":
        record = export.export_stablehlo(metadata, variables, args.out, args.endpoint,
                                         args.overwrite)
    elif args.format == "savedmodel":
        record = export.export_savedmodel(metadata, variables, args.out, args.endpoint,
                                          args.overwrite)
    else:
        if args.endpoint != "Logits":
            raise ValueError("--endpoint is for stablehlo and savedmodel; a state_dict holds "
                             "the whole network")
        record = export.export_pytorch_i3d(metadata, variables, args.out, args.overwrite)
    print(json.dumps({"out": str(args.out), **{k: record[k] for k in (
        "format", "params_sha256") if k in record}}))
    return 0


# i3d_jax.export.FORMATS, spelt out so that `--help` imports no JAX.
FORMATS = ("stablehlo", "savedmodel", "pytorch-i3d")


def register(subparsers):
    parser = subparsers.add_parser(
        "export", help="write a model for other frameworks: StableHLO, TF SavedModel, "
                       "pytorch-i3d state_dict",
        description="stablehlo: one serialised jax.export program (weights inside, batch and "
                    "time symbolic) and PATH.json; savedmodel: a TF SavedModel whose "
                    "serving_default takes input_frames [B, T, 224, 224, C] in [-1, 1] and "
                    "returns logits (TF-Hub's i3d-kinetics-400 names); pytorch-i3d: I3D's "
                    "state_dict for piergiaj/pytorch-i3d's InceptionI3d (.pt or .npz). "
                    "docs/export.md shows how to load each.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", default=None,
                        help="a checkpoint directory (convert, inflate) or a training workdir")
    source.add_argument("--weights", default=None,
                        help="named pretrained weights (default: kinetics400-rgb)")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="what to write; the description above says what each holds")
    parser.add_argument("--out", required=True,
                        help="the file (stablehlo; pytorch-i3d: .pt, .pth or .npz) or folder "
                             "(savedmodel) to write")
    parser.add_argument("--stream", choices=STREAMS, default=None,
                        help="check that the weights are for this stream")
    parser.add_argument("--endpoint", default="Logits",
                        help="an endpoint to output besides the logits (e.g. AvgPool, Mixed_5c)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it exists (the old one is kept until the new "
                             "is whole)")
    parser.set_defaults(func=cmd_export)
