"""`i3d-jax flow`: TV-L1 optical flow of a video, with a colour-wheel preview."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from i3d_jax.atomic_file import atomic_output, write_atomically

VIZ_SUFFIXES = (".gif", ".mp4")


def load_frames(path, fps: float | None, max_frames: int | None, resize_short_side: int | None):
    """uint8 frames [T, H, W] or [T, H, W, 3] from a video file or a .npy array."""
    from i3d_jax.video import VideoDecodeError, decode_video, resize_short_side as resize

    path = Path(path)
    if path.suffix == ".npy":
        try:
            frames = np.load(path, allow_pickle=False)
        except Exception as e:
            raise VideoDecodeError(f"{path}: not a readable .npy array ({e})") from None
        if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
            raise ValueError(
                f"{path}: expected uint8 frames [T, H, W] or [T, H, W, 3], "
                f"got {frames.dtype} array of shape {frames.shape}"
            )
        frames = frames[:max_frames] if max_frames else frames
    else:
        frames, _ = decode_video(path, fps=fps or None, max_frames=max_frames)
    if resize_short_side:
        gray = frames.ndim == 3
        frames = resize(frames[..., None] if gray else frames, resize_short_side)
        frames = frames[..., 0] if gray else frames
    if frames.shape[0] < 2:
        raise ValueError(f"{path}: flow needs at least 2 frames, got {frames.shape[0]}")
    return frames


def write_visualisation(path, flow, fps: float, max_magnitude: float | None = None):
    """Writes the colour-wheel rendering of flow [T, H, W, 2] as a GIF (PIL) or MP4 (PyAV)."""
    from i3d_jax.flow import flow_to_colour

    path = Path(path)
    if path.suffix not in VIZ_SUFFIXES:
        raise ValueError(f"--viz {path} must end in {' or '.join(VIZ_SUFFIXES)}")
    if max_magnitude is None:
        # One scale for the whole clip, so colours compare across frames.
        max_magnitude = float(np.hypot(flow[..., 0], flow[..., 1]).max())
    frames = flow_to_colour(flow, max_magnitude)
    with atomic_output(path) as tmp:
        if path.suffix == ".gif":
            _write_gif(tmp, frames, fps)
        else:
            _write_mp4(tmp, frames, fps)


def _write_gif(path, frames, fps):
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=round(1000.0 / fps), loop=0)


def _write_mp4(path, frames, fps):
    import av
    from fractions import Fraction

    # H.264 in yuv420p needs even sides: repeat the last row/column if odd.
    _, height, width, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def cmd_flow(args) -> int:
    from i3d_jax.flow import TVL1Params, tvl1_flow
    from i3d_jax.video import VideoDecodeError

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
    parser.add_argument("--frames", type=int, default=None, help="use at most N frames")
    parser.add_argument("--resize-short-side", type=int, default=None,
                        help="resize frames so the shorter side is S pixels (default: as decoded)")
    parser.add_argument("--batch-size", type=int, default=16, help="frame pairs per compiled batch")
    algorithm = parser.add_argument_group("TV-L1 parameters (default: OpenCV's DualTVL1 defaults)")
    for field in dataclasses.fields(TVL1Params):
        flag = "--" + field.name.rstrip("_").replace("_", "-")
        algorithm.add_argument(flag, dest=field.name, type=type(field.default), default=None,
                               metavar=field.name.rstrip("_").upper(), help=f"default {field.default}")
    parser.set_defaults(func=cmd_flow)
