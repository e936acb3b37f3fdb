"""A benchmark dataset with the statistics of real video: slow pans and zooms over a
natural photograph (matplotlib's bundled `grace_hopper.jpg`, 600x512), written as H.264
clips of 340x256 at 25 fps and built by the `video_folder` builder, which stores frames
as the Kinetics builder does (JPEG quality 90, short side 256, 25 fps; flow as 2-channel
PNG). Flat generated frames (`synthetic_motion`) compress and decode far faster than
camera frames; these do not.

    PYTHONPATH=. python -m benchmarks.natural_frames --data_dir /tmp/tfds   # builds both
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FPS = 340, 256, 25


def photograph() -> np.ndarray:
    import matplotlib.cbook
    from PIL import Image

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.asarray(Image.open(path).convert("RGB"))


def render_clip(image: np.ndarray, rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """uint8 [T, 256, 340, 3]: a window moving slowly across `image` while zooming,
    resampled bilinearly (what a camera pan and zoom look like, a few px a frame)."""
    import cv2

    height, width = image.shape[:2]
    zoom0, zoom1 = rng.uniform(1.0, 1.5, 2)  # window side in output pixels per source pixel
    frames = []
    for t in range(num_frames):
        zoom = zoom0 + (zoom1 - zoom0) * t / max(num_frames - 1, 1)
        window_w, window_h = WIDTH / zoom, HEIGHT / zoom
        if t == 0:
            x = rng.uniform(0, width - window_w)
            y = rng.uniform(0, height - window_h)
            vx, vy = rng.uniform(-2, 2, 2)
        x = float(np.clip(x + vx, 0, width - window_w))
        y = float(np.clip(y + vy, 0, height - window_h))
        # The affine map from output pixels to the window's source pixels.
        warp = np.float32([[1 / zoom, 0, x], [0, 1 / zoom, y]])
        frames.append(cv2.warpAffine(image, warp, (WIDTH, HEIGHT),
                                     flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                     borderMode=cv2.BORDER_REFLECT))
    return np.stack(frames)


def write_clips(manual_dir: Path, count: int, seconds: float, seed: int = 0) -> None:
    """`count` clips in manual_dir/train/<class>/, two classes."""
    import av

    image = photograph()
    rng = np.random.default_rng(seed)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    for i in range(count):
        path = manual_dir / "train" / f"class_{i % 2}" / f"clip_{i:03d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        frames = render_clip(image, rng, int(seconds * FPS))
        with av.open(str(path), "w") as container:
            stream = container.add_stream(codec, rate=FPS)
            stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


# (config, clips, seconds): flow builds TV-L1 for every frame pair, so its set is smaller.
SETS = {"rgb": (16, 3.0), "flow": (4, 2.8)}


def build(data_dir: Path, config: str):
    """The `video_folder/<config>` builder over generated clips (built once)."""
    import tensorflow_datasets as tfds

    from i3d_jax import datasets  # noqa: F401  (registers the builders)

    builder = tfds.builder(f"video_folder/{config}", data_dir=str(data_dir))
    if not builder.is_prepared():
        manual_dir = Path(data_dir) / f"natural_frames_clips_{config}"
        count, seconds = SETS[config]
        if not manual_dir.exists():
            write_clips(manual_dir, count, seconds)
        print(f"building video_folder/{config} from {count} natural-frame clips in {data_dir}",
              file=sys.stderr)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, required=True)
    parser.add_argument("--configs", nargs="+", default=["rgb", "flow"], choices=tuple(SETS))
    args = parser.parse_args(argv)
    for config in args.configs:
        builder = build(args.data_dir, config)
        print(builder.info.full_name, builder.info.splits["train"].num_examples, "clips")
    return 0


if __name__ == "__main__":
    sys.exit(main())
