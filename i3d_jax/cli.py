"""`i3d-jax` command line: predict, features, convert."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import i3d_jax.quiet_tf  # noqa: E402,F401  (before anything imports TF)

import numpy as np  # noqa: E402

from i3d_jax.atomic_file import write_atomically  # noqa: E402

# I3D checkpoints, then the 2D ImageNet Inception-v1 ones (written as our
# 2D `inception_v1`, the source of `i3d-jax inflate --from flax`).
CONVERT_FORMATS = ("deepmind", "pytorch-i3d", "i3d-jax-pickle", "tf-slim", "torchvision")

# Subcommands that live beside their capability: each module has
# `register(subparsers)`, adding parsers whose `func(args)` returns an exit code.
COMMAND_MODULES = ("i3d_jax.fvd_cli", "i3d_jax.flow_cli", "i3d_jax.inflate_cli", "i3d_jax.summary")


def _weights_arguments(parser):
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--weights", default=None,
                       help="named pretrained weights (default: kinetics400-rgb)")
    group.add_argument("--checkpoint", default=None,
                       help="an Orbax checkpoint directory written by convert, inflate or training")
    parser.add_argument("--stream", choices=("rgb", "flow"), default=None,
                        help="input stream; flow takes .npy arrays [T, H, W, 2] (default: the weights')")
    parser.add_argument("--frames", type=int, default=None,
                        help="use at most N frames (after resampling to 25 fps)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="compute dtype (parameters stay float32)")


def _load(args):
    from i3d_jax.inference import LoadedModel

    loaded = LoadedModel.from_options(args.weights, args.checkpoint)
    if args.stream:
        loaded.check_stream(args.stream)
    return loaded


def _clips(args, loaded):
    """Yields (path, clip) and reports unreadable videos without stopping."""
    from i3d_jax.video import VideoDecodeError, load_clip

    failures = []
    for path in args.videos:
        try:
            clip = load_clip(path, max_frames=args.frames, in_channels=loaded.metadata.in_channels)
        except (VideoDecodeError, ValueError) as e:
            print(f"i3d-jax: skipping {e}", file=sys.stderr)
            failures.append(path)
            continue
        yield path, clip
    args.failures = failures


def _dtype(args):
    import jax.numpy as jnp

    return jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32


def cmd_predict(args) -> int:
    from i3d_jax.inference import top_k

    loaded = _load(args)
    run = loaded.endpoint_fn("Logits", _dtype(args))
    for path, clip in _clips(args, loaded):
        logits = np.asarray(run(clip))
        best = top_k(loaded, logits, args.top_k)
        if args.json:
            record = {
                "path": str(path),
                "logits": [float(v) for v in logits],
                "top_k": [{"label": b["label"], "prob": b["prob"]} for b in best],
            }
            print(json.dumps(record), flush=True)
        else:
            print(f"{path} ({clip.shape[0]} frames)")
            for b in best:
                print(f"  {b['prob']:8.5f}  {b['label']}")
            sys.stdout.flush()
    return 1 if args.failures else 0


def cmd_features(args) -> int:
    out = Path(args.out)
    if out.suffix not in (".npy", ".npz"):
        raise ValueError(f"--out {out} must end in .npy or .npz")
    if out.suffix == ".npy" and len(args.videos) > 1:
        raise ValueError(f"{len(args.videos)} videos need an .npz --out (keyed by path), not {out}")
    loaded = _load(args)
    run = loaded.endpoint_fn(args.endpoint, _dtype(args))
    features = {}
    for path, clip in _clips(args, loaded):
        features[str(path)] = np.asarray(run(clip))
        print(f"{path}: {args.endpoint} {features[str(path)].shape}", file=sys.stderr)
    if not features:
        print("i3d-jax features: no video could be read; nothing written", file=sys.stderr)
        return 1
    if out.suffix == ".npy":
        write_atomically(out, lambda f: np.save(f, next(iter(features.values()))))
    else:
        write_atomically(out, lambda f: np.savez(f, **features))
    print(f"wrote {out}", file=sys.stderr)
    return 1 if args.failures else 0


def read_labels(path) -> list[str]:
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def convert_checkpoint(fmt: str, src: str, stream: str | None = None, fold_scale: bool = False):
    """(variables, ModelMetadata) of an external checkpoint, checked against its
    model: I3D, or our 2D Inception-v1 for tf-slim and torchvision."""
    from i3d_jax.checkpoints import ModelMetadata
    from i3d_jax.convert import common
    from i3d_jax.convert.inception_v1 import INCEPTION_V1_FORMATS, convert_inception_v1_checkpoint

    if fmt in INCEPTION_V1_FORMATS:
        return convert_inception_v1_checkpoint(fmt, src, stream, fold_scale)
    if fmt == "deepmind":
        from i3d_jax.convert.deepmind import convert_deepmind, read_tf_checkpoint

        variables = convert_deepmind(read_tf_checkpoint(src), stream, origin=src)
    elif fmt == "pytorch-i3d":
        from i3d_jax.convert.pytorch_i3d import convert_pytorch_i3d, read_state_dict

        variables = convert_pytorch_i3d(read_state_dict(src), origin=src)
    elif fmt == "i3d-jax-pickle":
        from i3d_jax.convert.i3d_jax_pickle import load_i3d_jax_pickle

        variables = load_i3d_jax_pickle(src)
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(CONVERT_FORMATS)}")
    if fold_scale:
        variables = common.fold_batch_norm_scale(variables)
    fields = common.infer_model_fields(variables)
    channel_stream = {3: "rgb", 2: "flow"}.get(fields["in_channels"])
    if channel_stream is None:
        raise ValueError(f"{src}: first conv takes {fields['in_channels']} channels; expected 3 or 2")
    if stream and stream != channel_stream:
        raise ValueError(f"{src}: --stream {stream}, but its first conv takes {channel_stream} input")
    metadata = ModelMetadata(stream=channel_stream, source=f"{fmt}:{Path(src).name}", **fields)
    model = metadata.build_model()
    common.check_fits(variables, common.expected_variables(model, fields["in_channels"]), src)
    return variables, metadata


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


def build_parser():
    parser = argparse.ArgumentParser(prog="i3d-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    predict = sub.add_parser("predict", help="top-k Kinetics classes for each video")
    predict.add_argument("videos", nargs="+", help="video files (mp4, avi, mkv, webm, gif) or .npy clips")
    _weights_arguments(predict)
    predict.add_argument("--top-k", type=int, default=5)
    predict.add_argument("--json", action="store_true", help="one JSON object per video per line")
    predict.set_defaults(func=cmd_predict)

    features = sub.add_parser("features", help="I3D features of each video")
    features.add_argument("videos", nargs="+")
    features.add_argument("--out", required=True, help=".npy for one video, .npz keyed by path for several")
    features.add_argument("--endpoint", default="AvgPool",
                          help="endpoint to extract (default AvgPool: [T', 1024] after Mixed_5c)")
    _weights_arguments(features)
    features.set_defaults(func=cmd_features)

    convert = sub.add_parser("convert", help="external I3D or 2D Inception-v1 checkpoint -> Orbax checkpoint")
    convert.add_argument("--from", dest="format", required=True, choices=CONVERT_FORMATS,
                         help="tf-slim and torchvision are ImageNet Inception-v1 (GoogLeNet) checkpoints")
    convert.add_argument("src", help="TF checkpoint prefix, .pt/.pth/.npz state_dict, or pickle/sdist")
    convert.add_argument("--out", required=True, help="output checkpoint directory")
    convert.add_argument("--stream", choices=("rgb", "flow"), default=None)
    convert.add_argument("--labels", default=None, help="class names, one a line, in output order")
    convert.add_argument("--fold-batch-norm-scale", action="store_true",
                         help="fold BatchNorm gamma into the convs (exact at inference) "
                              "instead of keeping it as a scale")
    convert.add_argument("--overwrite", action="store_true")
    convert.set_defaults(func=cmd_convert)

    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, ImportError) as e:
        print(f"i3d-jax {args.command}: error: {e}", file=sys.stderr)
        code = 2
    sys.exit(code)
