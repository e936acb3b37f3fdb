"""Shared test set-up: 8 fake CPU devices, quiet TF, the reference folder, no skips in CI."""
import importlib
import os

# Before JAX initialises: sharding tests need several devices, on CPU. The suite
# spends more time compiling than running, and LLVM's optimisation level 0
# compiles a tiny train step in 30% less time (the suite's real-size tests too
# ran faster with it: 141 s -> 114 s for test_cli, test_parity_pytorch_i3d and
# test_inflate); XLA:CPU's older elemental emitters in place of its fusion
# emitters compile the tiny I3D's gradient in 3.5 s, not 8.4 (test_architectures'
# gradient steps 104 -> 68 s); subprocesses inherit them.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                                   "--xla_backend_optimization_level=0 "
                                   "--xla_cpu_use_fusion_emitters=false")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The huge-pages recipe of docs/benchmarks.md, for the xdist workers and the
# subprocesses this process starts (glibc reads it as a process starts): the
# suite's train steps fault their memory in 2 MiB at a time.
os.environ.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("I3D_REFERENCE_DIR", REPO.parent / "shared" / "reference"))
# Set by .ci/run: CI has everything every test needs (../shared/reference, the
# test requirements, PyPI), so a test that would skip fails, and so does a
# session in which any test skipped.
REQUIRE_ALL = os.environ.get("I3D_REQUIRE_ALL_TESTS") == "1"


def skip_or_fail(reason: str):
    """Skips the test (or module); fails it where every test must run (I3D_REQUIRE_ALL_TESTS=1)."""
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (I3D_REQUIRE_ALL_TESTS=1: no test may skip)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_test_package(module: str, purpose: str):
    """`module`, from a package pinned in requirements-test.txt; skips without it (or fails)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        error = e
    skip_or_fail(f"{purpose} needs {module} (pip install -r requirements-test.txt): {error}")


def reference_files(*names: str) -> Path:
    """The reference folder, where it holds `names` (and its README.md)."""
    missing = [n for n in ("README.md", *names) if not (REFERENCE_DIR / n).exists()]
    if missing:
        skip_or_fail(f"reference data not found in {REFERENCE_DIR} (missing {', '.join(missing)}); "
                     "set I3D_REFERENCE_DIR to the shared reference folder")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """../shared/reference (or $I3D_REFERENCE_DIR); skips where it is absent (fails in CI)."""
    return reference_files()


# The slow tier: command-line runs, the wheel, Beam, the PyTorch peers and the
# reference data (`python -m pytest -m "not slow"` runs the rest in a few minutes).
SLOW_MODULES = {"test_train", "test_multihost", "test_paper_configs", "test_packaging",
                "test_torch_peers", "test_benchmark_torch_i3d", "test_flow_opencv",
                "test_parity_pytorch_i3d", "test_resume_topology", "test_export", "test_resume"}
SLOW_FIXTURES = {"reference_dir", "cricket_rgb_u8", "cricket_flow_u8", "seeded_weights",
                 "compile_cache", "pretrained"}


# Modules by worker-seconds, the heaviest first (measured on a 2-core Xeon): with
# `--dist loadfile` pytest-xdist hands out files in collection order, so the long ones
# start first and the short ones fill in, instead of two long files ending the run.
HEAVIEST_FIRST = ("test_train", "test_train_in_process", "test_torch_peers", "test_multihost",
                  "test_paper_configs", "test_export", "test_architectures", "test_cli",
                  "test_resume", "test_packaging", "test_fvd", "test_features")


def pytest_configure(config):
    # pytest-xdist would reorder files by their number of tests; keep HEAVIEST_FIRST.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if module in SLOW_MODULES or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    # sort is stable: within a module, and among the unlisted, the order is kept.
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1], len(rank)))


_skipped = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if REQUIRE_ALL and _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if REQUIRE_ALL and _skipped:
        terminalreporter.write_line(
            f"I3D_REQUIRE_ALL_TESTS=1, but {len(_skipped)} test(s) skipped: "
            + ", ".join(_skipped), red=True)


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


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """synthetic_motion/tiny (32x32, 20 frames, 32 train / 16 test clips), built once."""
    from i3d_jax import datasets

    data_dir = tmp_path_factory.mktemp("tfds")
    datasets.builder("synthetic_motion/tiny", data_dir=str(data_dir)).download_and_prepare()
    return data_dir


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory):
    """XLA's persistent compilation cache for the session's subprocesses: runs that
    compile the same program compile it once."""
    return tmp_path_factory.mktemp("jax_cache")
