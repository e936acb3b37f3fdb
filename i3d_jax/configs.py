"""Where the experiment configs are, finding one by name, loading it outside
absl, and the helpers they share (arguments, hardware presets).

The configs live in the repository's `experiments/` (one `get_config(arg)`
per file, `default.py` declaring every key, `synthetic_demo.py` the main
job); the wheel installs the same files as the package `i3d_jax.experiments`.
Each paper config states its own recipe; nothing here holds one.
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
    """experiments/default.py: every key, declared with its meaning."""
    return experiments_dir() / "default.py"


def demo_config_path() -> Path:
    """experiments/synthetic_demo.py: the main job, what `i3d-jax train` runs by default."""
    return experiments_dir() / "synthetic_demo.py"


def config_names() -> list[str]:
    """The configs found by name (`--config NAME`): the experiments' files."""
    return sorted(p.stem for p in experiments_dir().glob("*.py") if not p.stem.startswith("_"))


def resolve_config(spec: str | Path) -> tuple[Path, str]:
    """(file, argument) of `--config`: `NAME[:ARG]` (a config of experiments/, by name,
    from any installation) or `path/to/NAME.py[:ARG]`."""
    text, _, arg = str(spec).partition(":")
    path = Path(text)
    if path.suffix != ".py" and not path.exists():
        named = experiments_dir() / f"{text}.py"
        if not named.exists():
            raise FileNotFoundError(
                f"--config {spec}: no config named {text!r} (the configs: "
                f"{', '.join(config_names())}) and no such file")
        return named, arg
    if not path.exists():
        raise FileNotFoundError(f"--config {spec}: config file {path} not found")
    return path, arg


def load_config(spec: str | Path, lock: bool = True):
    """The config of `NAME[:ARG]` or `path/to/NAME.py[:ARG]`, locked (as `--config` gives it)."""
    path, arg = resolve_config(spec)
    module_spec = importlib.util.spec_from_file_location(f"_i3d_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path} defines no get_config()")
    config = module.get_config(arg) if arg else module.get_config()
    if lock:
        config.lock()
    return config


def demo_config(lock: bool = True):
    """The main job's config (experiments/synthetic_demo.py)."""
    return load_config(demo_config_path(), lock=lock)


def default_config(lock: bool = True):
    return load_config(default_config_path(), lock=lock)


# --------------------------------------------------------------------------
# What the paper's experiment configs share: their arguments, and hardware
# presets, which change only the batch, the mesh, the dtype and how often a
# run logs (never the recipe).

PRESETS = {
    # One CPU machine: a batch that fits in memory, for trying a config out.
    "cpu": {"batch_size": 8, "eval.batch_size": 8, "mesh.data": -1, "mesh.fsdp": 1,
            "dtype": "float32", "log_every_steps": 10},
    # 8 GPUs of 80 GB: 32 clips each in bf16 (docs/scaling.md: 1.7 GB of activations a clip).
    "gpu8": {"batch_size": 256, "eval.batch_size": 64, "mesh.data": -1, "mesh.fsdp": 1,
             "dtype": "bfloat16", "log_every_steps": 100},
    # A TPU v5e-64 slice: 4 clips a chip (16 GB each), 16 hosts.
    "tpu_v5e_64": {"batch_size": 256, "eval.batch_size": 64, "mesh.data": -1, "mesh.fsdp": 1,
                   "dtype": "bfloat16", "log_every_steps": 100},
}


def parse_variant(arg: str | None, config_file: str, **choices: tuple[str, ...]) -> dict:
    """`arg` ("rgb,imagenet,gpu8": comma-separated, any order) as {group: choice};
    each group's first choice when not given; "preset" from PRESETS or None."""
    groups = {**choices, "preset": tuple(PRESETS)}
    chosen = {}
    for token in filter(None, (arg or "").split(",")):
        owners = [g for g, options in groups.items() if token in options]
        if not owners:
            known = "; ".join(f"{g}: {', '.join(o)}" for g, o in groups.items())
            raise ValueError(f"{config_file}: unknown argument {token!r} (known: {known})")
        if owners[0] in chosen:
            raise ValueError(f"{config_file}: two values for {owners[0]}: "
                             f"{chosen[owners[0]]!r} and {token!r}")
        chosen[owners[0]] = token
    return {g: chosen.get(g, None if g == "preset" else options[0])
            for g, options in groups.items()}


def set_values(config, values: dict) -> None:
    """Dotted keys ("eval.batch_size") to values; every key must exist."""
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        if leaf not in node:
            raise KeyError(f"{dotted} is not a config key (experiments/default.py declares them)")
        node[leaf] = value


def apply_preset(config, preset: str | None, **overrides) -> None:
    """The hardware preset's values (PRESETS; none for None), then `overrides`."""
    if preset:
        set_values(config, {**PRESETS[preset], **overrides})
