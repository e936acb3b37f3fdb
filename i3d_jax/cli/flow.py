"""`i3d-jax flow`: TV-L1 optical flow of a video, with a colour-wheel preview
(the flow is `i3d_jax.flow`, the reading and writing `i3d_jax.video`)."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from i3d_jax.atomic_file import write_atomically
from i3d_jax.cli.common import positive_int
from i3d_jax.video import VIZ_SUFFIXES


def cmd_flow(args) -> int:
    from i3d_jax.flow import TVL1Params, tvl1_flow
    from i3d_jax.video import VideoDecodeError, load_frames, write_visualisation

    out = Path(args.out)
    if out.suffix != ".npy":
        raise ValueError(f"--out {out} must end in .npy")
    if args.viz and Path(args.viz).suffix not in VIZ_SUFFIXES:
        raise ValueError(f"--viz {args.viz} must end in {' or '.join(VIZ_SUFFIXES)}")
    params = {f.name: getattr(args, f.name) for f in dataclasses.fields(TVL1Params)
              if getattr(args, f.name) is not None}
    try:
        frames = load_frames(args.video, args.fps, args.frames, args.resize_short_side)
    except VideoDecodeError as e:
        print(f"i3d-jax flow: {e}", file=sys.stderr)
        return 1
    print(f"{args.video}: {frames.shape[0]} frames of {frames.shape[1]}x{frames.shape[2]}, "
          f"{frames.shape[0] - 1} flow pairs", file=sys.stderr)
    flow = tvl1_flow(frames, batch_size=args.batch_size, progress=True, **params)
    write_atomically(out, lambda f: np.save(f, flow))
    print(f"wrote {out}: flow {list(flow.shape)} float32 pixels (x, y), "
          f"max |flow| {float(np.hypot(flow[..., 0], flow[..., 1]).max()):.2f}", file=sys.stderr)
    if args.viz:
        write_visualisation(args.viz, flow, fps=args.fps or 25.0, max_magnitude=args.viz_max)
        print(f"wrote {args.viz}", file=sys.stderr)
    return 0


def register(subparsers):
    from i3d_jax.flow import TVL1Params

    parser = subparsers.add_parser(
        "flow", help="TV-L1 optical flow of a video (OpenCV DualTVL1's algorithm, in JAX)")
    parser.add_argument("video", help="a video file, or a .npy of uint8 frames [T, H, W] or [T, H, W, 3]")
    parser.add_argument("--out", required=True, help="output .npy: [T-1, H, W, 2] float32 flow in pixels (x, y)")
    parser.add_argument("--viz", default=None, help="also write a colour-wheel rendering (.gif or .mp4)")
    parser.add_argument("--viz-max", type=float, default=None,
                        help="flow magnitude (pixels) drawn fully saturated (default: the clip's largest)")
    parser.add_argument("--fps", type=float, default=25.0,
                        help="resample video files to this rate (default 25, as predict; 0 keeps every frame)")
    parser.add_argument("--frames", type=positive_int, default=None, help="use at most N frames")
    parser.add_argument("--resize-short-side", type=positive_int, default=None,
                        help="resize frames so the shorter side is S pixels (default: as decoded)")
    parser.add_argument("--batch-size", type=positive_int, default=16,
                        help="frame pairs per compiled batch (default 16)")
    algorithm = parser.add_argument_group("TV-L1 parameters (default: OpenCV's DualTVL1 defaults)")
    for field in dataclasses.fields(TVL1Params):
        flag = "--" + field.name.rstrip("_").replace("_", "-")
        algorithm.add_argument(flag, dest=field.name, type=type(field.default), default=None,
                               metavar=field.name.rstrip("_").upper(), help=f"default {field.default}")
    parser.set_defaults(func=cmd_flow)
