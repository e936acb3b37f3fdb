"""`i3d-jax fvd` and `i3d-jax fvd-stats`: Fréchet Video Distance on the command line.

A set of videos is a folder of video files (anything PyAV decodes, or .npy
clips [T, H, W, 3] uint8), an array [N, T, H, W, 3] uint8 in a .npy or .npz,
or, for `fvd`, an .npz of statistics written by `fvd-stats` (keys mu, sigma).
Frames are taken as stored (no frame-rate resampling) and resized to 224x224
as the TF FVD code does: see `i3d_jax.fvd`.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from i3d_jax.arrays import NpzRows, load_array, npz_keys
from i3d_jax.cli.common import add_kernels_argument, positive_int
from i3d_jax.fvd import (
    DEFAULT_BATCH_SIZE,
    EMBEDDINGS,
    MIN_FRAMES,
    PROTOCOLS,
    VideoSetStatistics,
    clip_start,
    frechet_distance,
    get_protocol,
    is_statistics_file,
    kernel_distance,
)


@dataclass
class VideoSet:
    """Videos to embed: how many, the first one's shape, and an iterator of (name, clip)."""

    label: str
    path: Path
    num_videos: int
    first_shape: tuple  # (T, H, W, 3) of the first video, as stored
    clips: Callable[[int | None], Iterator]  # max_frames -> (name, uint8 clip) pairs


def _load_videos(path: Path):
    """An .npy memory-mapped, or an .npz member read a row at a time: either way a
    set larger than memory streams through."""
    if path.suffix == ".npy":
        return load_array(path, mmap=True)
    keys = npz_keys(path)
    if len(keys) == 1 or "videos" in keys:
        return NpzRows(path, keys[0] if len(keys) == 1 else "videos")
    raise ValueError(
        f"{path}: an .npz of videos must hold one array (or one named 'videos'); "
        f"found keys {', '.join(keys) or 'none'}"
    )


def _array_set(label: str, path: Path) -> VideoSet:
    try:
        videos = _load_videos(path)
    except Exception as e:
        if isinstance(e, ValueError) and str(path) in str(e):
            raise ValueError(f"{label} {e}") from None
        raise ValueError(
            f"{label} {path}: not a readable array ({type(e).__name__}: {e})"
        ) from None
    if len(videos.shape) != 5 or videos.shape[-1] != 3 or videos.dtype != np.uint8:
        raise ValueError(
            f"{label} {path}: expected uint8 videos [N, T, H, W, 3] in 0..255, "
            f"got {videos.dtype} of shape {tuple(videos.shape)}"
        )

    def clips(max_frames):
        for i, video in enumerate(videos):
            yield f"{path}[{i}]", np.asarray(video[:max_frames])

    return VideoSet(label, path, videos.shape[0], tuple(videos.shape[1:]), clips)


def _read_clip(path: Path, max_frames: int | None) -> np.ndarray:
    from i3d_jax.video import decode_video

    if path.suffix == ".npy":
        clip = load_array(path, mmap=True)
        if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
            raise ValueError(
                f"{path}: expected a uint8 clip [T, H, W, 3], "
                f"got {clip.dtype} of shape {clip.shape}"
            )
        return np.asarray(clip[:max_frames])
    # fps=None: every stored frame, as the FVD convention takes the clip as it is.
    return decode_video(path, fps=None, max_frames=max_frames)[0]


def _folder_set(label: str, folder: Path) -> VideoSet:
    from i3d_jax.video import VIDEO_SUFFIXES

    files = sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in (*VIDEO_SUFFIXES, ".npy")
    )
    if not files:
        raise ValueError(
            f"{label} {folder}: no videos ({', '.join(VIDEO_SUFFIXES)} or .npy clips) in the folder"
        )
    first = _read_clip(files[0], None)

    def clips(max_frames):
        for path in files:
            yield str(path), _read_clip(path, max_frames)

    return VideoSet(label, folder, len(files), tuple(first.shape), clips)


def open_source(label: str, path: str, allow_statistics: bool = True):
    """A VideoSetStatistics or a VideoSet for the path given as REAL, FAKE or VIDEOS."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{label} {path}: no such file or directory")
    if path.is_dir():
        source = _folder_set(label, path)
    elif is_statistics_file(path):
        if not allow_statistics:
            raise ValueError(f"{label} {path}: holds statistics (mu, sigma), not videos")
        return VideoSetStatistics.load(path)
    elif path.suffix in (".npy", ".npz"):
        source = _array_set(label, path)
    else:
        raise ValueError(
            f"{label} {path}: expected a folder of videos, a .npy/.npz array "
            "[N, T, H, W, 3] uint8, or an .npz of statistics"
        )
    if source.num_videos < 2:
        raise ValueError(f"{label} {path}: FVD needs at least 2 videos, found {source.num_videos}")
    return source


def _check_frames_option(frames: int | None):
    if frames is not None and frames < MIN_FRAMES:
        raise ValueError(f"--frames {frames}: I3D's FVD embedding needs at least {MIN_FRAMES} frames")


def _check_frames(source: VideoSet, frames: int | None):
    stored = source.first_shape[0]
    if frames is None and stored < MIN_FRAMES:
        raise ValueError(
            f"{source.label} {source.path}: {stored} frames, but I3D's FVD embedding needs "
            f"at least {MIN_FRAMES}"
        )
    if frames is not None and stored < frames:
        raise ValueError(
            f"{source.label} {source.path}: {stored} frames, fewer than --frames {frames}"
        )


def _frames_of(item, frames: int | None) -> int | None:
    if isinstance(item, VideoSetStatistics):
        return item.frames
    return frames or item.first_shape[0]


def _resolution_of(item):
    if isinstance(item, VideoSetStatistics):
        return list(item.resolution) if item.resolution else None
    return list(item.first_shape[1:3])


def _make_embedder(args, embedding: str):
    from i3d_jax.fvd import VideoEmbedder
    from i3d_jax.inference import LoadedModel

    protocol = get_protocol(args.protocol)
    loaded = LoadedModel.from_options(args.weights, args.checkpoint)
    return VideoEmbedder.from_pretrained(
        loaded.metadata, loaded.variables, embedding=embedding, kernels=args.kernels,
        # styleganv: clips are cut before the embedder (`_protocol_clips`).
        frames=args.frames if protocol.name == "tf" else None, batch_size=args.batch_size,
        protocol=protocol,
    )


@dataclass
class ClipRule:
    """What a protocol takes from each video of a set."""

    frames: int
    stride: int
    start: str  # "first" or "random"
    max_videos: int | None
    drop_short: bool  # a video too short for a clip is dropped (else an error)
    seed: int = 0


def _clip_rule(args, real: bool) -> ClipRule | None:
    """None for the tf protocol (first --frames frames, every video); else the rule."""
    protocol = get_protocol(args.protocol)
    if protocol.name == "tf":
        if args.frame_stride != 1 or args.real_clip_start or args.max_videos:
            raise ValueError("--frame-stride, --real-clip-start and --max-videos are "
                             "for --protocol styleganv")
        return None
    return ClipRule(frames=args.frames or protocol.frames, stride=args.frame_stride,
                    start=(args.real_clip_start or protocol.real_start) if real else "first",
                    max_videos=args.max_videos or protocol.max_videos, drop_short=real,
                    seed=args.seed)


def _protocol_clips(source: VideoSet, rule: ClipRule, dropped: list):
    """(name, clip) of `rule.frames` frames `rule.stride` apart from each video, the
    first `rule.max_videos` that are long enough; the short ones named in `dropped`."""
    rng = np.random.default_rng(rule.seed)
    span = rule.frames * rule.stride
    kept = 0
    # A random start needs the whole video; a first one only its first frames.
    for name, clip in source.clips(None if rule.start == "random" else span):
        start = clip_start(len(clip), rule.frames, rule.stride, rule.start, rng)
        if start is None:
            if not rule.drop_short:
                raise ValueError(f"{source.label} {name}: {len(clip)} frames, fewer than the "
                                 f"{span} a clip of {rule.frames} frames {rule.stride} apart "
                                 "spans")
            dropped.append(name)
            continue
        yield name, clip[start:start + span:rule.stride]
        kept += 1
        if rule.max_videos and kept == rule.max_videos:
            return


def _embed(embedder, source: VideoSet, rule: ClipRule | None = None) -> VideoSetStatistics:
    if rule is None:
        clips, count = source.clips(embedder.frames), source.num_videos
    else:
        dropped = []
        clips = _protocol_clips(source, rule, dropped)
        count = min(source.num_videos, rule.max_videos or source.num_videos)
    stats = embedder.statistics(clips, num_videos=count,
                                description=f"{source.label} ({count} videos)")
    if rule is not None:
        if dropped:
            print(f"i3d-jax: {source.label} {source.path}: {len(dropped)} videos shorter than "
                  f"{rule.frames * rule.stride} frames dropped (StyleGAN-V's rule), the first "
                  f"{dropped[0]}", file=sys.stderr)
        if stats.num_videos < 2:
            raise ValueError(f"{source.label} {source.path}: {stats.num_videos} videos long "
                             "enough for a clip; FVD needs at least 2")
        if rule.max_videos and stats.num_videos < rule.max_videos:
            print(f"i3d-jax: warning: {source.label} {source.path} has {stats.num_videos} "
                  f"videos, the protocol {rule.max_videos}: FVD is biased by the set's size, "
                  "so this number is not comparable with the protocol's", file=sys.stderr)
        stats.frame_stride = rule.stride
    stats.origin = str(source.path)
    return stats


def _describe(item) -> str:
    if isinstance(item, VideoSetStatistics):
        return f"statistics {item.origin}"
    return str(item.path)


def _check_protocol(item, protocol: str, rule: ClipRule | None):
    """A statistics file made by another protocol or clip rule is refused."""
    made_by = item.protocol or "tf"
    if made_by != protocol:
        raise ValueError(f"{_describe(item)} holds {made_by}-protocol statistics, but "
                         f"--protocol {protocol} was asked; recompute them with it")
    if rule is not None and (item.frames, item.frame_stride or 1) != (rule.frames, rule.stride):
        raise ValueError(f"{_describe(item)} was computed on clips of {item.frames} frames "
                         f"{item.frame_stride or 1} apart, but {rule.frames} frames "
                         f"{rule.stride} apart were asked")


def cmd_fvd(args) -> int:
    _check_frames_option(args.frames)
    protocol = get_protocol(args.protocol)
    real = open_source("REAL", args.real)
    fake = open_source("FAKE", args.fake)
    sides = (real, fake)
    rules = (_clip_rule(args, real=True), _clip_rule(args, real=False))
    stats_sides = [s for s in sides if isinstance(s, VideoSetStatistics)]

    # The embedding kind: as asked, else as the statistics say, else logits.
    kinds = {s.embedding for s in stats_sides if s.embedding}
    if len(kinds) > 1:
        raise ValueError(
            f"REAL {_describe(real)} uses the {real.embedding} embedding but FAKE "
            f"{_describe(fake)} the {fake.embedding} embedding; "
            "compute both with the same --embedding"
        )
    embedding = args.embedding or (kinds.pop() if kinds else "logits")
    for s, rule in zip(sides, rules):
        if not isinstance(s, VideoSetStatistics):
            continue
        _check_protocol(s, protocol.name, rule)
        if s.embedding and s.embedding != embedding:
            raise ValueError(
                f"{_describe(s)} holds {s.embedding} statistics, "
                f"but --embedding {embedding} was asked"
            )
        if s.embedding is None:
            print(f"i3d-jax fvd: warning: {s.origin} does not say which embedding or frame "
                  "count produced it; they cannot be checked", file=sys.stderr)
        if args.frames and s.frames and s.frames != args.frames:
            raise ValueError(
                f"{_describe(s)} was computed on {s.frames}-frame clips, "
                f"but --frames {args.frames} was asked"
            )
    if protocol.name == "tf":
        for s in sides:
            if isinstance(s, VideoSet):
                _check_frames(s, args.frames)
        frame_counts = [_frames_of(s, args.frames) for s in sides]
        if None not in frame_counts and frame_counts[0] != frame_counts[1]:
            hint = min(frame_counts)
            raise ValueError(
                f"REAL has {frame_counts[0]}-frame clips but FAKE {frame_counts[1]}-frame "
                f"clips; FVD compares clips of one length: pass --frames {hint} to use the "
                f"first {hint} frames of each (statistics cannot be cut)"
            )
    if len(stats_sides) == 2 and real.mu.shape != fake.mu.shape:
        raise ValueError(
            f"REAL {_describe(real)} has {real.mu.shape[0]}-d statistics but FAKE "
            f"{_describe(fake)} {fake.mu.shape[0]}-d"
        )
    resolutions = [_resolution_of(s) for s in sides]
    if None not in resolutions and resolutions[0] != resolutions[1]:
        print(f"i3d-jax fvd: warning: REAL is {resolutions[0][0]}x{resolutions[0][1]} and FAKE "
              f"{resolutions[1][0]}x{resolutions[1][1]}; both are resized to 224x224, but the "
              "resize itself changes the FVD: compare sets of one resolution", file=sys.stderr)

    embedder = None
    computed = []
    for s, rule in zip(sides, rules):
        if isinstance(s, VideoSet):
            embedder = embedder or _make_embedder(args, embedding)
            computed.append(_embed(embedder, s, rule))
        else:
            computed.append(s)
    real_stats, fake_stats = computed
    weights = {s.weights for s in computed if s.weights}
    if len(weights) > 1:
        raise ValueError(
            f"the two sets were embedded with different weights ({' and '.join(sorted(weights))})"
        )
    if real_stats.mu.shape != fake_stats.mu.shape:
        raise ValueError(
            f"REAL {_describe(real)} has {real_stats.mu.shape[0]}-d embeddings but FAKE "
            f"{_describe(fake)} {fake_stats.mu.shape[0]}-d"
        )
    distance = frechet_distance(real_stats.mu, real_stats.sigma, fake_stats.mu, fake_stats.sigma)
    without = [_describe(s) for s in (real, fake)
               if isinstance(s, VideoSetStatistics) and s.embeddings is None]
    kvd = None if without else kernel_distance(real_stats.embeddings, fake_stats.embeddings)
    frames = real_stats.frames or fake_stats.frames
    if args.json:
        record = {
            "fvd": distance,
            "kvd": kvd,
            "num_real": real_stats.num_videos,
            "num_fake": fake_stats.num_videos,
            "frames": frames,
            "resolution": {"real": resolutions[0], "fake": resolutions[1]},
            "embedding": embedding,
            "protocol": protocol.name,
        }
        if protocol.name != "tf":
            record["frame_stride"] = rules[0].stride
        if without:
            record["kvd_unavailable"] = (f"{' and '.join(without)} holds no embeddings "
                                         "(written before KVD): recompute with fvd-stats")
        print(json.dumps(record))
    else:
        print(f"FVD {distance:.4f}" + (f"  KVD {kvd:.4f}" if kvd is not None else "")
              + f"  ({protocol.name} protocol; real: {real_stats.num_videos} videos, fake: "
              f"{fake_stats.num_videos} videos, {frames} frames, {embedding} embedding)")
    return 0


def cmd_fvd_stats(args) -> int:
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out {out} must end in .npz")
    _check_frames_option(args.frames)
    source = open_source("VIDEOS", args.videos, allow_statistics=False)
    rule = _clip_rule(args, real=True)  # a reference set is a set of real videos
    if rule is None:
        _check_frames(source, args.frames)
    embedding = args.embedding or "logits"
    stats = _embed(_make_embedder(args, embedding), source, rule)
    stats.save(out)
    print(f"wrote {out}: {stats.embedding} statistics ({args.protocol} protocol) of "
          f"{stats.num_videos} videos, {stats.frames} frames, "
          f"{stats.resolution[0]}x{stats.resolution[1]}", file=sys.stderr)
    return 0


def _common_arguments(parser):
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--weights", default=None,
                       help="named pretrained weights "
                            "(default: kinetics400-rgb, TF-Hub's i3d-kinetics-400)")
    group.add_argument("--checkpoint", default=None, help="an Orbax checkpoint directory")
    parser.add_argument("--embedding", choices=EMBEDDINGS, default=None,
                        help="logits: the 400 Kinetics logits (TF FVD code; default); "
                             "features: the 1024-d average pool after Mixed_5c, averaged over time")
    parser.add_argument("--frames", type=positive_int, default=None,
                        help=f"use the first N frames of every clip (at least {MIN_FRAMES}); "
                             "default: all frames, as the TF FVD code")
    parser.add_argument(
        "--protocol", choices=tuple(PROTOCOLS), default="tf",
        help="tf (default): the TF FVD code (TF1 resize, every frame or the first --frames, "
             "every video, unbiased covariance). styleganv: StyleGAN-V's fvd2048_16f "
             "(--frames 128: fvd2048_128f; --frames 16 --frame-stride 8: "
             "fvd2048_128f_subsample8f): PyTorch's bilinear resize, 16 consecutive frames "
             "from a random start in each real video (from frame 0 in generated ones), the "
             "first 2048 videos of each set, biased covariance. See docs/fvd.md")
    parser.add_argument("--frame-stride", type=positive_int, default=1,
                        help="styleganv: frames between a clip's frames (default 1)")
    parser.add_argument("--real-clip-start", choices=("random", "first"), default=None,
                        help="styleganv: where a real video's clip starts (default random, "
                             "drawn from --seed); a generated video's starts at frame 0")
    parser.add_argument("--max-videos", type=positive_int, default=None,
                        help="styleganv: the first N videos of each set (default 2048)")
    parser.add_argument("--seed", type=int, default=0,
                        help="styleganv: the seed of the real clips' random starts")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                        help="videos per step, split over the local devices (rounded up "
                             f"to a multiple of their count; default {DEFAULT_BATCH_SIZE})")
    add_kernels_argument(parser)


def register(subparsers):
    fvd = subparsers.add_parser(
        "fvd", help="Fréchet Video Distance between two sets of videos",
        description="FVD with TF-Hub's I3D (kinetics400-rgb), by the TF code's protocol "
                    "(default) or StyleGAN-V's (--protocol styleganv); see docs/fvd.md.",
    )
    fvd.add_argument("real", help="folder of videos, .npy/.npz [N, T, H, W, 3] uint8, "
                                  "or .npz statistics")
    fvd.add_argument("fake", help="as REAL")
    fvd.add_argument("--json", action="store_true",
                     help='print {"fvd", "kvd", "num_real", "num_fake", "frames", '
                          '"resolution", "embedding", "protocol"}; kvd: the polynomial-kernel '
                          'MMD^2 (unbiased, over the whole sets)')
    _common_arguments(fvd)
    fvd.set_defaults(func=cmd_fvd)

    stats = subparsers.add_parser(
        "fvd-stats", help="save the FVD statistics (mean, covariance) of a set of videos",
    )
    stats.add_argument("videos", help="folder of videos or .npy/.npz [N, T, H, W, 3] uint8")
    stats.add_argument("--out", required=True, help="statistics .npz (written atomically)")
    _common_arguments(stats)
    stats.set_defaults(func=cmd_fvd_stats)
