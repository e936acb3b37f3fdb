"""The benchmark's PyTorch I3D is checked against pytorch-i3d's reference outputs,
and this project's JAX model against it, so the CPU benchmark compares two
implementations of the same function."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the benchmark's PyTorch I3D needs torch")

REPO = Path(__file__).resolve().parents[1]
# `benchmarks` is a top-level folder, not part of the installed package.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.torch_i3d import InceptionI3d as TorchI3d  # noqa: E402

REFERENCE_DIR = Path(os.environ.get("I3D_REFERENCE_DIR", REPO.parent / "shared" / "reference"))
NEEDED = (
    "seeded_weights.py",
    "pytorch_i3d_rgb_manifest.json",
    "pytorch_i3d_expected.npz",
    "v_CricketShot_g04_c01_rgb.gif",
)


@pytest.fixture(scope="module")
def reference():
    missing = [name for name in NEEDED if not (REFERENCE_DIR / name).exists()]
    if missing:
        pytest.skip(
            f"reference data not found in {REFERENCE_DIR} (missing {', '.join(missing)}); "
            "set I3D_REFERENCE_DIR to the shared reference folder"
        )
    return REFERENCE_DIR


@pytest.fixture(scope="module")
def seeded_state(reference):
    """pytorch-i3d RGB state_dict with the reference's deterministic weights."""
    spec = importlib.util.spec_from_file_location(
        "_i3d_reference_seeded_weights", reference / "seeded_weights.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    manifest = json.loads((reference / "pytorch_i3d_rgb_manifest.json").read_text())
    return module.seeded_weights(manifest, layout="torch", seed=0)


@pytest.fixture(scope="module")
def torch_model(seeded_state):
    model = TorchI3d().eval()
    # strict: every name in the manifest is one of ours and vice versa.
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in seeded_state.items()})
    return model


def _cricket_rgb(reference, frames=32):
    from PIL import Image, ImageSequence

    with Image.open(reference / "v_CricketShot_g04_c01_rgb.gif") as gif:
        decoded = zip(range(frames), ImageSequence.Iterator(gif))
        rgb = [np.asarray(frame.convert("RGB")) for _, frame in decoded]
    return (np.stack(rgb)[None].astype(np.float32) / 255.0) * 2.0 - 1.0  # [1, T, H, W, 3]


def _close(got, want, rel=1e-4):
    err = np.abs(got - want).max()
    bound = rel * np.abs(want).max()
    assert err <= bound, f"max abs diff {err:.3g} > {bound:.3g}"


def test_torch_i3d_matches_pytorch_i3d_reference(reference, torch_model):
    expected = np.load(reference / "pytorch_i3d_expected.npz")
    x = torch.from_numpy(_cricket_rgb(reference)).permute(0, 4, 1, 2, 3)  # NCTHW
    with torch.inference_mode():
        per_time, features = torch_model(x)
    per_time = per_time[0].T.numpy()  # [T', 400]
    features = features[0].T.numpy()  # [T', 1024]
    assert per_time.shape == expected["rgb_logits_per_time"].shape
    assert features.shape == expected["rgb_features"].shape
    _close(per_time, expected["rgb_logits_per_time"])
    _close(per_time.mean(axis=0), expected["rgb_logits"])
    _close(features, expected["rgb_features"])


def test_jax_i3d_matches_torch_i3d(seeded_state, torch_model):
    from i3d_jax.convert.pytorch_i3d import convert_pytorch_i3d
    from i3d_jax.models.i3d import InceptionI3d

    # Odd sizes everywhere, so TF SAME pads asymmetrically; non-square frames
    # catch a swapped H/W.
    x = np.random.default_rng(0).uniform(-1, 1, (1, 10, 64, 80, 3)).astype(np.float32)
    with torch.inference_mode():
        per_time, features = torch_model(torch.from_numpy(x).permute(0, 4, 1, 2, 3))
    want_per_time = per_time.permute(0, 2, 1).numpy()  # [B, T', 400]
    want_features = features.permute(0, 2, 1).numpy()  # [B, T', 1024]

    variables = convert_pytorch_i3d(seeded_state)
    model = InceptionI3d(batch_norm_scale=True)
    logits, endpoints = model.apply(variables, x, train=False, return_endpoints=True)

    _close(np.asarray(endpoints["LogitsPerTime"]), want_per_time)
    _close(np.asarray(endpoints["AvgPool"]), want_features)
    _close(np.asarray(logits), want_per_time.mean(axis=1))
