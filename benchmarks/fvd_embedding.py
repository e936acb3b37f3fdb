"""FVD embedding throughput: videos per second through `i3d_jax.fvd.VideoEmbedder`.

Times the whole embedding path that `i3d-jax fvd` runs (host batching, the
uint8 transfer, the TF1 bilinear resize, I3D up to the logits, the fetch),
on random uint8 clips, default 16 frames of 224x224, sharded over every local
device. Compilation is done once before timing. Run from the repository root:

    PYTHONPATH=. python benchmarks/fvd_embedding.py [--videos 32] [--batch-size 8] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.machine import available_cores, cpu_model  # noqa: E402


def load_model(random_weights: bool):
    """(metadata, variables, where they came from)."""
    import jax
    import jax.numpy as jnp

    from i3d_jax.checkpoints import ModelMetadata

    if not random_weights:
        from i3d_jax.weights import load_weights

        metadata, variables = load_weights("kinetics400-rgb")
        return metadata, variables, "kinetics400-rgb"
    # Throughput does not depend on the values: a seeded init needs no download.
    metadata = ModelMetadata(source="random init (seed 0)")
    model = metadata.build_model()
    variables = jax.jit(lambda key: model.init(key, jnp.zeros((1, 9, 224, 224, 3)), train=False))(
        jax.random.PRNGKey(0))
    return metadata, variables, metadata.source


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=32, help="videos to time (after the warm-up)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="videos per step (rounded up to a multiple of the device count)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224,
                        help="stored frame height and width (224: no resize needed)")
    parser.add_argument("--embedding", choices=("logits", "features"), default="logits")
    parser.add_argument("--random-weights", action="store_true",
                        help="seeded random init instead of the pretrained kinetics400-rgb")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args(argv)
    if args.videos < 1 or args.batch_size < 1:
        parser.error("--videos and --batch-size must be positive")

    import jax

    from i3d_jax.fvd import VideoEmbedder

    metadata, variables, weights_from = load_model(args.random_weights)
    embedder = VideoEmbedder.from_pretrained(
        metadata, variables, embedding=args.embedding, batch_size=args.batch_size)
    batch = embedder.batch_capacity(args.videos)
    rng = np.random.default_rng(0)
    shape = (args.videos, args.frames, args.size, args.size, 3)
    videos = rng.integers(0, 256, shape, dtype=np.uint8)

    start = time.perf_counter()
    embedder(videos[:batch], progress=False)  # compiles for this batch shape
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    embeddings = embedder(videos, progress=False)
    elapsed = time.perf_counter() - start
    assert embeddings.shape[0] == args.videos and np.all(np.isfinite(embeddings))

    devices = jax.local_devices()
    rate = args.videos / elapsed
    print(f"{args.videos} videos {shape[1:]} (T, H, W, C) uint8, {args.embedding}, batch {batch} "
          f"over {len(devices)} {devices[0].platform} device(s); weights: {weights_from}")
    print(f"compile + first batch: {warmup_s:.1f} s (not timed)")
    print(f"embedding: {elapsed:.2f} s, {rate:.3f} videos/s")
    if devices[0].platform == "cpu":
        print(f"CPU: {cpu_model()}, {available_cores()} cores available to this process")

    if args.json:
        report = {
            "videos": args.videos,
            "video_shape_thwc": list(shape[1:]),
            "embedding": args.embedding,
            "batch": batch,
            "devices": [str(d) for d in devices],
            "platform": devices[0].platform,
            "weights": weights_from,
            "compile_and_first_batch_s": warmup_s,
            "seconds": elapsed,
            "videos_per_s": rate,
            "cores": available_cores(),
            "cpu_model": cpu_model(),
            "versions": {"jax": jax.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
