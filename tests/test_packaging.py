"""The package as a wheel: what a non-editable install (`pip install .`) gets,
outside the checkout: the dataset builders, the experiment configs by name,
and a training run of the main job."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

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


def test_every_package_folder_is_in_the_wheel_s_list():
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts)
             for p in (REPO / "i3d_jax").rglob("__init__.py")}
    assert listed == found | {"i3d_jax.experiments"}
    assert (REPO / "experiments" / "__init__.py").exists()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, site-packages, a folder outside the checkout, env) of a fresh
    environment with the wheel installed."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "i3d_jax", source / "i3d_jax", ignore=ignore)
    shutil.copytree(REPO / "experiments", source / "experiments", ignore=ignore)
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
    return python, site_packages, outside, env, tmp_path


def test_the_wheel_ships_every_dataset_builder(installed):
    python, site_packages, outside, env, tmp_path = installed
    listed = run([str(python), "-c", LIST_BUILDERS, str(tmp_path / "tfds")], cwd=outside, env=env)
    found = json.loads(listed.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(site_packages), found["package"]
    assert found["names"] == ["hmdb51", "kinetics", "synthetic_motion", "ucf101", "video_folder"]
    assert all(found["described"].values()), found["described"]
    assert found["cited"] == {"kinetics": True, "ucf101": True, "hmdb51": True,
                              "synthetic_motion": False, "video_folder": False}
    assert found["by_name"] == "kinetics/600_flow/1.0.0"


LOAD_CONFIGS = """
import json, sys
from i3d_jax.configs import load_config, resolve_config
rows = []
for spec in sys.argv[1:]:
    config = load_config(spec)
    rows.append((str(resolve_config(spec)[0]), config.total_steps, config.dataset))
print(json.dumps(rows))
"""

PAPER_CONFIGS = ["kinetics400_i3d:rgb,scratch,cpu", "kinetics400_i3d:flow,imagenet,gpu8",
                 "kinetics400_two_stream:scratch", "kinetics400_two_stream_fused",
                 "kinetics400_convnet_lstm:tpu_v5e_64", "kinetics400_conv3d",
                 "finetune:hmdb51,rgb+flow,2,last_layer", "synthetic_demo"]


def test_the_wheel_trains_and_finds_every_config_by_name(installed):
    python, site_packages, outside, env, tmp_path = installed
    i3d_jax = [str(python), "-m", "i3d_jax"]
    # By name through the command once, then every name through the same resolution in
    # one process (a process per name would only pay the imports again).
    printed = json.loads(run([*i3d_jax, "train", "--workdir", str(tmp_path / "unused"),
                              "--config", PAPER_CONFIGS[0], "--print-config"], cwd=outside,
                             env=env))
    assert printed["model"]["architecture"] == "i3d" and printed["total_steps"] > 0
    assert not (tmp_path / "unused").exists()  # --print-config touches nothing
    loaded = json.loads(run([str(python), "-c", LOAD_CONFIGS, *PAPER_CONFIGS], cwd=outside,
                            env=env).strip().splitlines()[-1])
    for spec, (path, total_steps, dataset) in zip(PAPER_CONFIGS, loaded):
        assert Path(path).is_relative_to(site_packages), (spec, path)
        assert total_steps > 0 and dataset, spec
    # A user's process: one CPU device, not the suite's eight fake ones (the suite's
    # other flags, which shorten compiles, stay).
    env = {**env, "XLA_FLAGS": env["XLA_FLAGS"].replace("device_count=8", "device_count=1"),
           "TFDS_DATA_DIR": str(tmp_path / "tfds"), "JAX_PLATFORMS": "cpu"}
    run([*i3d_jax, "train", "--workdir", str(tmp_path / "run"), "--config.total_steps=2",
         "--config.batch_size=2", "--config.eval.batch_size=2",
         "--config.eval.whole_video_frames=16", "--config.model.width_multiplier=0.125",
         "--config.dataset=synthetic_motion/tiny", "--config.input.crop_size=24"], cwd=outside, env=env)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["total_steps"] == 2 and config["optimizer"]["name"] == "adamw"
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    rows = [json.loads(line) for line in metrics.splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [2]
