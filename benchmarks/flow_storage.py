"""Flow frames stored as one 2-channel PNG (what the builders write) against two
grayscale JPEGs (x, y), on DeepMind's TV-L1 flow of CricketShot: bytes a frame, decode
frames/s on one thread (TF's decoders, a loop inside one tf.function, as the input
pipeline calls them), and what JPEG's loss does to the flow stream's logits, in the unit
the parity tests use (the largest logit difference over the largest logit; the tests
allow 1e-4). The flow I3D has the reference's seeded pytorch-i3d flow weights.

    PYTHONPATH=. python -m benchmarks.flow_storage --json benchmarks/results/flow_storage.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_REFERENCE_DIR = REPO.parent / "shared" / "reference"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", type=Path, default=Path(
        os.environ.get("I3D_REFERENCE_DIR", DEFAULT_REFERENCE_DIR)))
    parser.add_argument("--qualities", type=int, nargs="+", default=[90, 95])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from benchmarks.machine import limit_tf_threads, machine_record, tf_decode_rate

    tf = limit_tf_threads(1)
    tf.config.set_visible_devices([], "GPU")
    import jax
    from PIL import Image, ImageSequence
    from i3d_jax.convert.pytorch_i3d import convert_pytorch_i3d
    from i3d_jax.models import build_model

    with Image.open(args.reference_dir / "v_CricketShot_g04_c01_flow.gif") as gif:
        flow = np.stack([np.asarray(f.convert("RGB"))[..., :2]
                         for f in ImageSequence.Iterator(gif)])  # uint8 [T, H, W, 2]
    spec = importlib.util.spec_from_file_location("_seeded", args.reference_dir /
                                                  "seeded_weights.py")
    seeded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeded)
    manifest = json.loads((args.reference_dir / "pytorch_i3d_flow_manifest.json").read_text())
    variables = convert_pytorch_i3d(seeded.seeded_weights(manifest, layout="torch", seed=0))
    model = build_model("i3d", batch_norm_scale=True)
    logits_of = jax.jit(lambda v, x: model.apply(v, x, train=False))

    def logits(flow_u8):  # the parity tests' input: the first 32 frames, u8 -> [-1, 1]
        clip = (flow_u8[None, :32].astype(np.float32) / 255.0 - 0.5) * 2
        return np.asarray(logits_of(variables, clip))[0]

    reference = logits(flow)
    png = [tf.io.encode_png(frame).numpy() for frame in flow]
    png_decoded = np.stack([tf.io.decode_png(p, channels=0).numpy() for p in png])
    assert np.array_equal(png_decoded, flow)  # lossless
    results = {"frames": int(len(flow)), "frame_size": list(flow.shape[1:3]),
               "png": {"bytes_per_frame": round(float(np.mean([len(p) for p in png]))),
                       "decode_frames_per_second": round(tf_decode_rate(
                           lambda b: tf.io.decode_png(b, channels=0), png), 1),
                       "logits_relative_error": 0.0},
               "machine": machine_record()}
    for quality in args.qualities:
        pairs = [tuple(tf.io.encode_jpeg(frame[..., c:c + 1], quality=quality).numpy()
                       for c in range(2)) for frame in flow]
        decoded = np.stack([np.concatenate([tf.io.decode_jpeg(p, channels=1).numpy()
                                            for p in pair], -1) for pair in pairs])
        error = np.abs(logits(decoded) - reference).max() / np.abs(reference).max()
        results[f"jpeg_q{quality}"] = {
            "bytes_per_frame": round(float(np.mean([len(a) + len(b) for a, b in pairs]))),
            "decode_frames_per_second": round(tf_decode_rate(
                lambda x, y: tf.concat([tf.io.decode_jpeg(x, channels=1),
                                        tf.io.decode_jpeg(y, channels=1)], -1), pairs), 1),
            "pixel_max_abs_error": int(np.abs(decoded.astype(int) - flow).max()),
            "pixel_mean_abs_error": round(float(np.abs(decoded.astype(int) - flow).mean()), 3),
            "logits_relative_error": float(error)}
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
