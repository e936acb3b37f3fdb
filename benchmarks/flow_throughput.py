"""TV-L1 flow throughput: frame pairs per second, this project's JAX TV-L1 vs OpenCV's DualTVL1.

Both run OpenCV's default parameters on the same gray frame pairs (default
256x340, the size I3D's flow is computed at). JAX runs on its CPU backend
and, where one is present, on the GPU, `--batch-size` pairs per call (vmapped);
OpenCV (opencv-contrib-python-headless) runs one pair at a time on its own
thread pool. TV-L1 stops iterating once the flow settles, so the time a pair
takes depends on its content: pass real video with `--video` (it is resized to
the benchmark size and looped as needed); without it the frames are a seeded
smooth texture moved by a smooth motion field. Run from the repository root:

    PYTHONPATH=. python benchmarks/flow_throughput.py [--video V] [--pairs 8] [--json out.json]

On a GPU give it enough pairs to fill the device, e.g. `--pairs 1024 --batch-size 256`.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.machine import available_cores, cpu_model  # noqa: E402


def video_frames(path, count: int, height: int, width: int) -> np.ndarray:
    """`count` uint8 gray frames [count, height, width] from a video, looped."""
    from PIL import Image

    from i3d_jax.flow import to_gray
    from i3d_jax.video import decode_video

    frames, _ = decode_video(path, fps=None, max_frames=count)
    frames = np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR)) for f in frames])
    gray = to_gray(frames).astype(np.uint8)
    # Loop forwards and backwards so every consecutive pair is a real pair.
    cycle = np.concatenate([gray, gray[-2:0:-1]]) if len(gray) > 2 else gray
    return cycle[np.arange(count) % len(cycle)]


def synthetic_frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture moved a few pixels a frame by a smooth, changing field."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.standard_normal((height, width)), 2.0)
    texture = (texture - texture.min()) / (texture.max() - texture.min()) * 255.0
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    frames, displacement_x, displacement_y = [], np.zeros_like(xx), np.zeros_like(yy)
    for t in range(count):
        frames.append(ndimage.map_coordinates(texture, [yy - displacement_y, xx - displacement_x],
                                              order=3, mode="reflect"))
        displacement_x += 1.5 + np.sin(2 * np.pi * (yy / height + t / 10))
        displacement_y += 0.5 * np.cos(2 * np.pi * (xx / width + t / 10))
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)


def time_jax(gray: np.ndarray, pairs: int, batch_size: int, device, repeats: int):
    import jax

    from i3d_jax.flow import TVL1Params, tvl1_pairs

    params = TVL1Params()
    frames = jax.device_put(gray.astype(np.float32), device)
    starts = list(range(0, pairs, batch_size))

    def batch(start):
        index = np.minimum(np.arange(start, start + batch_size), pairs - 1)
        return frames[index], frames[index + 1]

    inputs = [batch(start) for start in starts]
    jax.block_until_ready(inputs)
    begin = time.perf_counter()
    first_flow = np.asarray(tvl1_pairs(*inputs[0], params))
    compile_and_first = time.perf_counter() - begin
    runs = []
    for _ in range(repeats):
        begin = time.perf_counter()
        results = [tvl1_pairs(prev, nxt, params) for prev, nxt in inputs]
        jax.block_until_ready(results)
        runs.append(time.perf_counter() - begin)
    return {
        "device": str(device),
        "device_kind": getattr(device, "device_kind", device.platform),
        "pairs": pairs,
        "batch_size": batch_size,
        "pairs_computed": len(starts) * batch_size,
        "compile_and_first_batch_s": compile_and_first,
        "seconds_per_run": runs,
        "median_s": statistics.median(runs),
        # Padding pairs of the last batch cost time but are not counted.
        "pairs_per_s": pairs / statistics.median(runs),
    }, first_flow


def time_opencv(gray: np.ndarray, pairs: int, threads: int | None):
    import cv2

    if threads is not None:
        cv2.setNumThreads(threads)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    tvl1.calc(gray[0], gray[1], None)  # first call allocates its buffers
    seconds, flows = [], []
    for i in range(pairs):
        begin = time.perf_counter()
        flows.append(tvl1.calc(gray[i], gray[i + 1], None))
        seconds.append(time.perf_counter() - begin)
    return {
        "version": cv2.__version__,
        "threads": cv2.getNumThreads(),
        "pairs": pairs,
        "seconds_per_pair": seconds,
        "pairs_per_s": pairs / sum(seconds),
    }, np.stack(flows)


def agreement(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """Mean end-point difference between JAX and OpenCV flow of the same pairs."""
    difference = np.hypot(*np.moveaxis(ours - theirs, -1, 0))
    return {"pairs": len(ours), "mean_epe_px": float(difference.mean()),
            "mean_flow_magnitude_px": float(np.hypot(*np.moveaxis(theirs, -1, 0)).mean())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=None,
                        help="video to take frames from (default: synthetic moving texture)")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=340)
    parser.add_argument("--pairs", type=int, default=8, help="frame pairs timed for JAX")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per JAX call")
    parser.add_argument("--repeats", type=int, default=2, help="timed JAX runs over all pairs (the median counts)")
    parser.add_argument("--opencv-pairs", type=int, default=None,
                        help="frame pairs timed for OpenCV (default: --pairs, at most 16)")
    parser.add_argument("--opencv-threads", type=int, default=None,
                        help="cv2.setNumThreads (default: OpenCV's own choice)")
    parser.add_argument("--no-opencv", action="store_true", help="time JAX only")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.batch_size < 1:
        parser.error("--pairs and --batch-size must be at least 1")

    import jax

    opencv_pairs = 0 if args.no_opencv else (args.opencv_pairs or min(args.pairs, 16))
    count = max(args.pairs, opencv_pairs) + 1
    if args.video:
        gray = video_frames(args.video, count, args.height, args.width)
        source = str(args.video)
    else:
        gray = synthetic_frames(count, args.height, args.width)
        source = "synthetic smooth texture, smooth motion (seed 0)"

    results = {
        "frames": source,
        "size_hw": [args.height, args.width],
        "parameters": "OpenCV DualTVL1 defaults (tau 0.25, lambda 0.15, theta 0.3, 5 scales, 5 warps, "
                      "epsilon 0.01, 30 inner x 10 outer iterations, scale step 0.8, median 5)",
        "machine": {"cpu": cpu_model(), "cores_available": available_cores()},
        "versions": {"jax": jax.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "jax": {},
    }
    platforms = ["cpu"] + [p for p in ("gpu", "tpu") if _has_platform(jax, p)]
    first_flows = {}
    for name in platforms:
        device = jax.devices(name)[0]
        print(f"JAX on {device} ({args.pairs} pairs, batches of {args.batch_size}) ...", file=sys.stderr)
        with jax.default_device(device):
            results["jax"][name], first_flows[name] = time_jax(
                gray, args.pairs, args.batch_size, device, args.repeats)
        print(f"  {results['jax'][name]['pairs_per_s']:.3f} pairs/s", file=sys.stderr)
    if opencv_pairs:
        print(f"OpenCV DualTVL1 ({opencv_pairs} pairs) ...", file=sys.stderr)
        results["opencv"], opencv_flows = time_opencv(gray, opencv_pairs, args.opencv_threads)
        results["versions"]["opencv"] = results["opencv"]["version"]
        print(f"  {results['opencv']['pairs_per_s']:.3f} pairs/s", file=sys.stderr)
        results["ratio_jax_cpu_over_opencv"] = results["jax"]["cpu"]["pairs_per_s"] / results["opencv"]["pairs_per_s"]
        # The same pairs through both: the speed comparison is of like with like.
        for name, flows in first_flows.items():
            shared = min(len(flows), len(opencv_flows), args.pairs)
            results["jax"][name]["agreement_with_opencv"] = agreement(flows[:shared], opencv_flows[:shared])

    print(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def _has_platform(jax, name: str) -> bool:
    try:
        return bool(jax.devices(name))
    except RuntimeError:
        return False


if __name__ == "__main__":
    main()
