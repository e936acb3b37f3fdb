"""`i3d-jax inflate`: an ImageNet Inception-v1 into an I3D Orbax checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

SOURCES = ("flax", "tf-slim", "torchvision")


def read_source(fmt: str, src: str):
    """(2D variables, its ModelMetadata) from an Orbax checkpoint of our
    InceptionV1 (`flax`) or an ImageNet checkpoint as distributed."""
    from i3d_jax.convert.inception_v1 import convert_inception_v1_checkpoint

    if fmt == "flax":
        from i3d_jax.checkpoints import load_pretrained

        metadata, variables = load_pretrained(src)
        if metadata.architecture != "inception_v1":
            raise ValueError(
                f"{src} holds a {metadata.architecture!r} checkpoint; inflate needs a 2D "
                "'inception_v1' one (write it with `i3d-jax convert --from tf-slim|torchvision`)"
            )
        return variables, metadata
    if fmt in ("tf-slim", "torchvision"):
        return convert_inception_v1_checkpoint(fmt, src)
    raise ValueError(f"unknown source format {fmt!r}; choose one of {', '.join(SOURCES)}")


def inflate_checkpoint(
    fmt: str,
    src: str,
    stream: str = "rgb",
    num_classes: int | None = None,
    keep_batch_norm_scale: bool = False,
    seed: int = 0,
):
    """(I3D variables, ModelMetadata) inflated from a 2D Inception-v1."""
    import jax

    from i3d_jax.checkpoints import STREAM_CHANNELS, ModelMetadata
    from i3d_jax.convert.common import expected_variables
    from i3d_jax.inflate import inflate_variables

    if num_classes is not None and num_classes < 1:
        raise ValueError(f"--num-classes {num_classes}: need at least one class")
    source, source_meta = read_source(fmt, src)
    if source_meta.in_channels != 3:
        raise ValueError(
            f"{src}: first conv takes {source_meta.in_channels} channels; "
            "inflation starts from an RGB (3-channel) Inception-v1"
        )
    in_channels = STREAM_CHANNELS[stream]
    metadata = ModelMetadata(
        architecture="i3d",
        stream=stream,
        num_classes=num_classes or source_meta.num_classes,
        in_channels=in_channels,
        batch_norm_scale=keep_batch_norm_scale and source_meta.batch_norm_scale,
        source=f"inflated from {source_meta.source or f'{fmt}:{Path(src).name}'}",
    )
    # Shapes only: every leaf comes from the source or, for a classifier of
    # another size, from a fresh initialisation of that leaf alone.
    target = expected_variables(metadata.build_model(), in_channels)
    variables = inflate_variables(source, target, origin=src, rng=jax.random.PRNGKey(seed))
    return variables, metadata, source_meta


def cmd_inflate(args) -> int:
    from i3d_jax.checkpoints import save_pretrained
    from i3d_jax.cli import read_labels

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
    parser.add_argument("--stream", choices=("rgb", "flow"), default="rgb")
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
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(func=cmd_inflate)
