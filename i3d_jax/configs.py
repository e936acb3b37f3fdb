"""Where the experiment configs are, and loading them outside absl.

The configs live in the repository's `experiments/` (one `get_config(arg)`
per file, `default.py` declaring every key); an installed package carries
the same files as `i3d_jax.experiments`.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

_CHECKOUT_EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
_PACKAGED_EXPERIMENTS = Path(__file__).resolve().parent / "experiments"


def experiments_dir() -> Path:
    for candidate in (_CHECKOUT_EXPERIMENTS, _PACKAGED_EXPERIMENTS):
        if (candidate / "default.py").exists():
            return candidate
    raise FileNotFoundError(
        f"no experiment configs: neither {_CHECKOUT_EXPERIMENTS} nor {_PACKAGED_EXPERIMENTS} "
        "holds default.py")


def default_config_path() -> Path:
    return experiments_dir() / "default.py"


def load_config(spec: str | Path, lock: bool = True):
    """The config of `path/to/NAME.py[:ARG]`, locked (as `--config` gives it)."""
    path, _, arg = str(spec).partition(":")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} not found")
    module_spec = importlib.util.spec_from_file_location(f"_i3d_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path} defines no get_config()")
    config = module.get_config(arg) if arg else module.get_config()
    if lock:
        config.lock()
    return config


def default_config(lock: bool = True):
    return load_config(default_config_path(), lock=lock)
