"""Shared test set-up: 8 fake CPU devices, quiet TF, the reference folder."""
import os

# Before JAX initialises: sharding tests need several devices, on CPU.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("I3D_REFERENCE_DIR", REPO.parent / "shared" / "reference"))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """../shared/reference (or $I3D_REFERENCE_DIR); skips where it is absent."""
    if not (REFERENCE_DIR / "README.md").exists():
        pytest.skip(f"reference data not found at {REFERENCE_DIR} (set I3D_REFERENCE_DIR)")
    return REFERENCE_DIR


def read_gif(path) -> np.ndarray:
    """Every frame of a GIF as RGB uint8 [T, H, W, 3]."""
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])


@pytest.fixture(scope="session")
def cricket_rgb_u8(reference_dir) -> np.ndarray:
    return read_gif(reference_dir / "v_CricketShot_g04_c01_rgb.gif")


@pytest.fixture(scope="session")
def cricket_flow_u8(reference_dir) -> np.ndarray:
    return read_gif(reference_dir / "v_CricketShot_g04_c01_flow.gif")


@pytest.fixture(scope="session")
def seeded_weights(reference_dir):
    """The reference folder's `seeded_weights(manifest, layout, seed)`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("seeded_weights", reference_dir / "seeded_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.seeded_weights
