"""Features for a folder of videos, in videos/s: `i3d-jax features --out-dir` (this
project) against the same job done the way v-iashin/video_features does it with
PyTorch, on the same CPU, the same videos and the same weights.

The videos are generated: a smooth random texture panned and zoomed, 320x240 at
30 fps, H.264 (or MPEG-4 where PyAV has no H.264 encoder), `--seconds` long. Both
pipelines resample to 25 fps, resize the short side to 256, take the centre
224x224 crop of windows of 64 frames every 64, and keep the 1024-d AvgPool features
averaged over time; for flow, TV-L1 on the resized frames, +-20 px to [-1, 1].

- ours: `i3d_jax.features.extract_dataset` (segments decoded by PyAV in a thread,
  windows batched, XLA; flow: `i3d_jax.flow` TV-L1 on the devices), one .npz a video;
- peer: PyAV decodes the whole video, frames resampled by their time stamps, resized
  with `torch.nn.functional.interpolate` (bilinear, antialiased, as torchvision's
  Resize), windows batched through `benchmarks/torch_i3d.py` under
  `torch.inference_mode()`; flow: OpenCV's DualTVL1 (opencv-contrib) per pair, the
  implementation DeepMind's flow came from (video_features substitutes RAFT, whose
  flow the released flow weights were never trained on). One .npz a video.

Weights: the shared reference's seeded pytorch-i3d weights when ../shared/reference
is there, else a seeded random init; the two pipelines' features of the first video
are compared before anything is timed. One video per pipeline is run first and not
timed (XLA compiles; PyTorch and OpenCV warm up). Run from the repository root:

    PYTHONPATH=. python benchmarks/features_throughput.py --videos 4 --streams rgb \\
        --json benchmarks/results/features_throughput_rgb.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.machine import available_cores, machine_record  # noqa: E402

DEFAULT_REFERENCE_DIR = REPO.parent / "shared" / "reference"
STACK, FPS, SHORT_SIDE, CROP = 64, 25.0, 256, 224


def write_videos(folder: Path, count: int, seconds: float, fps: int = 30,
                 size=(240, 320)) -> list[Path]:
    """`count` videos of a smooth random texture panned and slowly zoomed."""
    import av
    from scipy import ndimage

    folder.mkdir(parents=True, exist_ok=True)
    height, width = size
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    paths = []
    for v in range(count):
        rng = np.random.default_rng(v)
        texture = ndimage.gaussian_filter(rng.standard_normal((2 * height, 2 * width, 3)),
                                          (3.0, 3.0, 0))
        texture = ((texture - texture.min()) / np.ptp(texture) * 255).astype(np.float32)
        path = folder / f"video_{v:03d}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for t in range(int(seconds * fps)):
                zoom = 1.0 + 0.2 * t / (seconds * fps)
                dy, dx = 1.3 * t % height, 2.1 * t % width
                yy = (np.arange(height)[:, None] / zoom + dy) % (2 * height)
                xx = (np.arange(width)[None, :] / zoom + dx) % (2 * width)
                image = texture[yy.astype(int), xx.astype(int)].astype(np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        paths.append(path)
    return paths


def seeded_weights(reference_dir: Path, stream: str, torch_model) -> tuple[dict, str]:
    """pytorch-i3d state_dict (NumPy) for `stream`, and where it came from."""
    import importlib.util

    import torch

    manifest = reference_dir / f"pytorch_i3d_{stream}_manifest.json"
    script = reference_dir / "seeded_weights.py"
    if manifest.exists() and script.exists():
        spec = importlib.util.spec_from_file_location("_seeded_weights", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        state = module.seeded_weights(json.loads(manifest.read_text()), layout="torch", seed=0)
        return state, f"reference seeded_weights(seed=0), {stream}"
    torch.manual_seed(0)
    return ({k: v.detach().numpy() for k, v in torch_model.state_dict().items()},
            f"torch.manual_seed(0) random init, {stream}")


# ---------------------------------------------------------------------------
# The peer: video_features' way, in PyTorch


class TorchPipeline:
    def __init__(self, models: dict, batch_size: int):
        import cv2

        self.models, self.batch_size = models, batch_size
        self.tvl1 = cv2.optflow.DualTVL1OpticalFlow_create() if "flow" in models else None

    @staticmethod
    def decode(path: Path) -> np.ndarray:
        """Every frame, then resampled to 25 fps by time stamp (the last frame shown
        at or before each output time), as ffmpeg's fps filter and ours do."""
        import av

        frames, times = [], []
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(float(frame.time))
        times = np.asarray(times) - times[0]
        count = int(np.floor(times[-1] * FPS + 1e-9)) + 1
        index = np.searchsorted(times, np.arange(count) / FPS + 1e-6, side="right") - 1
        return np.stack(frames)[index]

    def resize(self, frames: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        h, w = frames.shape[1:3]
        scale = SHORT_SIDE / min(h, w)
        size = (max(SHORT_SIDE, round(h * scale)), max(SHORT_SIDE, round(w * scale)))
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def flow(self, frames: np.ndarray) -> np.ndarray:
        import cv2

        gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
        return np.stack([self.tvl1.calc(a, b, None) for a, b in zip(gray[:-1], gray[1:])])

    def __call__(self, path: Path, out: Path):
        import torch

        frames = self.resize(self.decode(path))
        inputs = {}
        if "flow" in self.models:
            inputs["flow"] = np.clip(self.flow(frames) / 20.0, -1, 1).astype(np.float32)
            frames = frames[:-1]
        if "rgb" in self.models:
            inputs["rgb"] = frames.astype(np.float32) / 255 * 2 - 1
        positions = len(next(iter(inputs.values())))
        starts = list(range(0, positions - STACK + 1, STACK)) or [0]
        h, w = frames.shape[1:3]
        top, left = (h - CROP) // 2, (w - CROP) // 2
        record = {}
        for stream, array in inputs.items():
            windows = [array[s:s + STACK, top:top + CROP, left:left + CROP] for s in starts]
            outputs = []
            for first in range(0, len(windows), self.batch_size):
                batch = torch.from_numpy(np.stack(windows[first:first + self.batch_size]))
                with torch.inference_mode():
                    _, features = self.models[stream](batch.permute(0, 4, 1, 2, 3))
                outputs.append(features.mean(dim=2).numpy())
            record[stream] = np.concatenate(outputs)[:, None]
        np.savez(out, **record)


# ---------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4, help="timed videos per pipeline")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each video")
    parser.add_argument("--streams", default="rgb", choices=("rgb", "rgb,flow"))
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where videos and features go (default: a temporary folder)")
    parser.add_argument("--reference-dir", type=Path, default=Path(
        os.environ.get("I3D_REFERENCE_DIR", DEFAULT_REFERENCE_DIR)))
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args(argv)
    streams = tuple(args.streams.split(","))

    import cv2
    import jax
    import torch

    from benchmarks.torch_i3d import InceptionI3d as TorchI3d
    from i3d_jax.checkpoints import ModelMetadata, save_pretrained
    from i3d_jax.convert.pytorch_i3d import convert_pytorch_i3d
    from i3d_jax.features import WindowFeatures, extract_dataset
    from i3d_jax.inference import LoadedModel

    cores = available_cores()
    torch.set_num_threads(cores)
    cv2.setNumThreads(cores)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="features_throughput_"))
    print(f"generating {args.videos + 1} videos of {args.seconds:g} s in {work}", file=sys.stderr)
    videos = write_videos(work / "videos", args.videos + 1, args.seconds)
    warmup, timed = videos[0], videos[1:]

    torch_models, ours, weights_from = {}, {}, []
    for stream in streams:
        channels = 3 if stream == "rgb" else 2
        model = TorchI3d(in_channels=channels).eval()
        state, origin = seeded_weights(args.reference_dir, stream, model)
        model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
        torch_models[stream] = model
        weights_from.append(origin)
        checkpoint = work / f"checkpoint_{stream}"
        if not checkpoint.exists():
            save_pretrained(checkpoint, convert_pytorch_i3d(state), ModelMetadata(
                stream=stream, in_channels=channels, batch_norm_scale=True))
        ours[stream] = WindowFeatures(LoadedModel.from_options(checkpoint=str(checkpoint)),
                                      "AvgPool", batch_size=args.batch_size)
    peer = TorchPipeline(torch_models, args.batch_size)

    def run_ours(paths, out):
        extract_dataset(paths, out, ours, stack=STACK, step=STACK, crops=1, fps=FPS,
                        overwrite=True)

    def run_peer(paths, out):
        out.mkdir(parents=True, exist_ok=True)
        for path in paths:
            peer(path, out / path.with_suffix(".npz").name)

    results = {}
    for name, run in (("pytorch", run_peer), ("jax", run_ours)):
        out = work / f"features_{name}"
        start = time.perf_counter()
        run([warmup], out)
        first = time.perf_counter() - start
        start = time.perf_counter()
        run(timed, out)
        seconds = time.perf_counter() - start
        results[name] = {"first_video_s": first, "seconds": seconds,
                         "videos_per_s": len(timed) / seconds,
                         "seconds_per_video": seconds / len(timed)}
        print(f"{name}: first video {first:.1f} s, then {len(timed)} videos in {seconds:.1f} s "
              f"({len(timed) / seconds:.3f} videos/s)", file=sys.stderr)

    agreement = {}
    with np.load(work / "features_jax" / "video_001.npz") as a, \
            np.load(work / "features_pytorch" / "video_001.npz") as b:
        for stream in streams:
            x, y = a[stream][:, 0].astype(np.float64), b[stream][:, 0].astype(np.float64)
            if x.shape != y.shape:
                raise SystemExit(f"{stream}: windows differ: ours {x.shape}, peer {y.shape}")
            cosine = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
            agreement[stream] = {"windows": len(x), "min_cosine": float(cosine.min()),
                                 "max_abs_diff": float(np.abs(x - y).max()),
                                 "max_abs_feature": float(np.abs(y).max())}
    ratio = results["jax"]["videos_per_s"] / results["pytorch"]["videos_per_s"]
    print(f"agreement on the first timed video: {agreement}", file=sys.stderr)
    print(f"ratio ours / PyTorch videos/s: {ratio:.2f} ({args.streams}, {len(timed)} videos of "
          f"{args.seconds:g} s, {cores} cores, {machine_record()['cpu']})")
    if args.json:
        from importlib.metadata import version

        report = {
            "streams": list(streams), "videos": len(timed), "seconds_per_video": args.seconds,
            "source": "320x240 30 fps generated (texture panned and zoomed)",
            "stack": STACK, "step": STACK, "fps": FPS, "crops": 1,
            "batch_size": args.batch_size, "weights": weights_from,
            "jax": results["jax"], "pytorch": results["pytorch"],
            "ratio_jax_over_pytorch": ratio, "agreement": agreement,
            "machine": machine_record(),
            "versions": {p: version(p) for p in ("jax", "flax", "torch", "av",
                                                 "opencv-contrib-python-headless")},
            "torch_threads": torch.get_num_threads(), "jax_devices": jax.local_device_count(),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
