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


# --------------------------------------------------------------------------
# What the paper's experiment configs share: their arguments, the recipe, and
# hardware presets, which change only the batch, the mesh, the dtype and how
# often a run logs (never the recipe).

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


def paper_recipe(config, *, total_steps: int, boundaries: tuple[int, ...],
                 learning_rate: float) -> None:
    """The paper's training and testing (section 3, "Implementation details"):
    SGD with momentum 0.9; the learning rate divided by 10 at `boundaries`
    (the paper: "when the validation loss saturated"; it gives no steps);
    short side resized to 256, a random 224 crop, a random start, short
    videos looped, one left-right flip for the whole clip; testing on the
    whole video (up to 250 frames), centre 224 crop. The paper's values for
    I3D's dropout and BatchNorm (TF's 0.999 momentum) are the models' own."""
    set_values(config, {
        "optimizer.name": "sgd", "optimizer.momentum": 0.9, "optimizer.nesterov": False,
        "optimizer.weight_decay": 1e-7,
        "schedule.name": "piecewise", "schedule.learning_rate": learning_rate,
        "schedule.warmup_steps": 0, "schedule.boundaries": tuple(boundaries),
        "schedule.factor": 0.1,
        # The builders store frames with the short side at 256 already: cropped as decoded.
        "input.resize_short_side": None, "input.crop_size": 224, "input.flip": True,
        "input.shuffle_buffer": 1024,
        "eval.whole_video_frames": 250, "eval.num_clips": 1, "eval.num_crops": 1,
        "model.width_multiplier": 1.0, "model.batch_norm_momentum": 0.999,
        "total_steps": total_steps, "batch_size": 256, "eval.batch_size": 16,
        "log_every_steps": 100, "checkpoint_every_steps": 1000, "keep_checkpoints": 3,
        "eval_every_steps": 10000,
    })


def i3d_stream_values(stream: str) -> dict:
    """What an I3D run of `stream` ("rgb", "flow" or "rgb+flow") sets: the model (two
    streams are `two_stream_i3d`, each with its own loss, as the paper trains them
    separately), its inputs and 64 frames a stream."""
    return {
        "model.architecture": "two_stream_i3d" if stream == "rgb+flow" else "i3d",
        "input.streams": {"rgb": "rgb", "flow": "flow", "rgb+flow": "rgb,flow"}[stream],
        "input.rgb.num_frames": 64, "input.flow.num_frames": 64,
        "loss.endpoints": "rgb_logits,flow_logits" if stream == "rgb+flow" else "",
    }


FINETUNE_KINETICS_RUNS = {"rgb": "runs/i3d_rgb", "flow": "runs/i3d_flow",
                          "rgb+flow": "runs/i3d_rgb_flow"}


# The paper fine-tuned on 16 GPUs: 64 clips (4 a GPU), on whatever hardware holds them.
FINETUNE_BATCH = {"cpu": 8, "gpu8": 64, "tpu_v5e_64": 64}


def finetune_recipe(config, variant: dict) -> None:
    """The paper's transfer (section 4.2, Table 4): I3D from a Kinetics run, on
    `variant["dataset"]` (UCF-101 or HMDB-51) split `variant["split"]`, up to 5k steps with the learning
    rate divided by 10 along the way. `last_layer`: the "Fixed" column, a new
    classifier on frozen features (trunk and BatchNorm fixed); `full`: the
    "Full-FT" column, end to end. The paper used 16 GPUs and states no batch or
    rate: 64 clips (4 a GPU), 0.1 for the last layer and 0.01 end to end, the
    boundaries at 3k and 4.5k steps are ours."""
    stream, split, mode, preset = (variant[k] for k in ("stream", "split", "mode", "preset"))
    paper_recipe(config, total_steps=5_000, boundaries=(3_000, 4_500),
                 learning_rate=0.1 if mode == "last_layer" else 0.01)
    set_values(config, {
        "dataset": f"{variant['dataset']}/{split}" + ("" if stream == "rgb" else "_flow"),
        **i3d_stream_values(stream),
        "model.dropout_rate": None,
        # A Kinetics training workdir: its 400-class classifier is replaced.
        "init_from": FINETUNE_KINETICS_RUNS[stream],
        "trainable": "classifier" if mode == "last_layer" else "all",
        "batch_norm": "frozen" if mode == "last_layer" else "global",
        "batch_size": 64, "checkpoint_every_steps": 500, "eval_every_steps": 1000,
        "log_every_steps": 50,
    })
    if preset:  # the hardware's mesh and dtype; fine-tuning's own batch and log cadence
        set_values(config, {**PRESETS[preset], "batch_size": FINETUNE_BATCH[preset],
                            "log_every_steps": 50})


def kinetics400_config(variant: dict, values: dict):
    """The paper's Kinetics-400 recipe with an architecture's `values`, then the
    variant's hardware preset; locked."""
    config = default_config(lock=False)
    paper_recipe(config, total_steps=110_000, boundaries=(60_000, 95_000), learning_rate=0.1)
    set_values(config, {"model.dropout_rate": None, **values})  # the architecture's dropout
    if variant["preset"]:
        set_values(config, PRESETS[variant["preset"]])
    config.lock()
    return config
