"""The package as a wheel: what a non-editable install (`pip install .`) gets."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What the wheel is built from: the package and its metadata, copied out of the
# checkout (so the build leaves nothing in it, and nothing else goes in).
SOURCE_FILES = ("pyproject.toml", "README.md", "setup.cfg")

LIST_BUILDERS = """
import json, sys, i3d_jax, i3d_jax.datasets as d
print(json.dumps({
    "package": i3d_jax.__file__,
    "names": d.builder_names(),
    "described": {n: bool(d.builder_class(n).get_metadata().description)
                  for n in d.BUILDER_NAMES},
    "cited": {n: bool(d.builder_class(n).get_metadata().citation) for n in d.BUILDER_NAMES},
    "by_name": d.builder("kinetics/600_flow", data_dir=sys.argv[1]).info.full_name,
}))
"""


def run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, (
        f"{command} failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    return result.stdout


def test_the_wheel_ships_every_dataset_builder(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO / "i3d_jax", source / "i3d_jax",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in SOURCE_FILES:
        shutil.copy(REPO / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(source)])
    (wheel,) = (tmp_path / "dist").glob("i3d_jax_quovadis-*.whl")

    # A fresh environment that sees this one's packages (TF, TFDS, JAX) through
    # a .pth file, so nothing is downloaded, but not its editable i3d_jax.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site_packages = Path(run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).strip())
    (site_packages / "test_environment.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "-q", str(wheel)])

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    listed = run([str(python), "-c", LIST_BUILDERS, str(tmp_path / "tfds")], cwd=outside, env=env)
    found = json.loads(listed.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(site_packages), found["package"]
    assert found["names"] == ["hmdb51", "kinetics", "synthetic_motion", "ucf101"]
    assert all(found["described"].values()), found["described"]
    assert found["cited"] == {"kinetics": True, "ucf101": True, "hmdb51": True,
                              "synthetic_motion": False}
    assert found["by_name"] == "kinetics/600_flow/1.0.0"
