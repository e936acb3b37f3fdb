"""`i3d-jax inflate`: an ImageNet Inception-v1 into an I3D Orbax checkpoint
(the inflation itself is `i3d_jax.inflate`)."""

from __future__ import annotations

import sys

from i3d_jax.cli.common import STREAMS, read_labels
from i3d_jax.inflate import SOURCES, inflate_checkpoint


def cmd_inflate(args) -> int:
    from i3d_jax.checkpoints import save_pretrained

    print(f"reading {args.src} ({args.format})", file=sys.stderr)
    variables, metadata, source_meta = inflate_checkpoint(
        args.format, args.src, args.stream, args.num_classes, args.keep_batch_norm_scale, args.seed
    )
    if args.labels:
        metadata.labels = read_labels(args.labels)
    elif metadata.num_classes == source_meta.num_classes:
        metadata.labels = list(source_meta.labels)
    save_pretrained(args.out, variables, metadata, overwrite=args.overwrite)
    classifier = (
        f"classifier inflated ({metadata.num_classes} classes)"
        if metadata.num_classes == source_meta.num_classes
        else f"classifier re-initialised for {metadata.num_classes} classes "
        f"(the source has {source_meta.num_classes})"
    )
    print(
        f"wrote {args.out}: i3d {metadata.stream} stream "
        f"({metadata.in_channels} channels), {classifier}"
    )
    return 0


def register(subparsers):
    parser = subparsers.add_parser(
        "inflate",
        help="2D ImageNet Inception-v1 -> I3D checkpoint (the paper's initialisation)",
        description="Inflates a 2D Inception-v1 into I3D: kernels repeated along time and divided "
        "by their temporal size, BatchNorm copied; for flow, the first conv's RGB "
        "filters averaged and repeated to 2 channels.",
    )
    parser.add_argument(
        "--from",
        dest="format",
        required=True,
        choices=SOURCES,
        help="flax: an Orbax checkpoint of our inception_v1 written by "
        "`i3d-jax convert`; tf-slim / torchvision: their ImageNet checkpoints",
    )
    parser.add_argument(
        "src",
        help="checkpoint directory (flax), TF checkpoint prefix or .npz (tf-slim), "
        ".pth or .npz (torchvision)",
    )
    parser.add_argument("--out", required=True, help="output checkpoint directory")
    parser.add_argument("--stream", choices=STREAMS, default="rgb",
                        help="stream of the I3D: rgb (3 channels) or flow (2; default rgb)")
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classes of the I3D (default: the source's, whose classifier is then "
        "inflated; another number re-initialises it)",
    )
    parser.add_argument(
        "--keep-batch-norm-scale",
        action="store_true",
        help="keep a source's BatchNorm gamma (torchvision) as a scale instead of "
        "folding it into the convs (I3D has none)",
    )
    parser.add_argument("--labels", default=None, help="class names, one a line, in output order")
    parser.add_argument("--seed", type=int, default=0, help="seed of a re-initialised classifier")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it exists (the old one is kept until the new is whole)")
    parser.set_defaults(func=cmd_inflate)
