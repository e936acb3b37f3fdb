"""`i3d-jax convert`: an external I3D or 2D Inception-v1 checkpoint into an
Orbax checkpoint (the formats are `i3d_jax.convert`)."""
from __future__ import annotations

import sys

from i3d_jax.cli.common import STREAMS, read_labels
from i3d_jax.convert import CONVERT_FORMATS, convert_checkpoint


def cmd_convert(args) -> int:
    from i3d_jax.checkpoints import save_pretrained

    variables, metadata = convert_checkpoint(args.format, args.src, args.stream, args.fold_batch_norm_scale)
    if args.labels:
        metadata.labels = read_labels(args.labels)
    elif metadata.num_classes == 400:
        try:
            from i3d_jax.weights import kinetics400_labels

            metadata.labels = kinetics400_labels()
        except Exception as e:  # offline: names are a nicety, not a need
            print(f"i3d-jax convert: no Kinetics-400 class names stored ({e}); "
                  "pass --labels FILE to add them", file=sys.stderr)
    save_pretrained(args.out, variables, metadata, overwrite=args.overwrite)
    print(f"wrote {args.out}: {metadata.architecture} {metadata.stream} stream, "
          f"{metadata.num_classes} classes")
    return 0


def register(subparsers):
    convert = subparsers.add_parser(
        "convert", help="external I3D or 2D Inception-v1 checkpoint -> Orbax checkpoint")
    convert.add_argument("--from", dest="format", required=True, choices=CONVERT_FORMATS,
                         help="deepmind, pytorch-i3d and i3d-jax-pickle are I3D checkpoints; "
                              "tf-slim and torchvision are ImageNet Inception-v1 (GoogLeNet) ones")
    convert.add_argument("src", help="TF checkpoint prefix, .pt/.pth/.npz state_dict, or pickle/sdist")
    convert.add_argument("--out", required=True, help="output checkpoint directory")
    convert.add_argument("--stream", choices=STREAMS, default=None,
                         help="the stream to take from a checkpoint holding both (DeepMind's); "
                              "otherwise checked against the first conv's channels "
                              "(3 rgb, 2 flow; default: as the checkpoint's)")
    convert.add_argument("--labels", default=None, help="class names, one a line, in output order")
    convert.add_argument("--fold-batch-norm-scale", action="store_true",
                         help="fold BatchNorm gamma into the convs (exact at inference) "
                              "instead of keeping it as a scale")
    convert.add_argument("--overwrite", action="store_true",
                         help="replace --out if it exists (the old one is kept until the new is whole)")
    convert.set_defaults(func=cmd_convert)
