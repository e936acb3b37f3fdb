"""Every config in experiments/ loads, locks and passes the trainer's checks, with
every argument it documents; presets change only the hardware keys."""
import itertools

import pytest

from i3d_jax.configs import PRESETS, experiments_dir, load_config
from i3d_jax.train import check_config

VARIANTS = {
    "default.py": [[]],
    "kinetics400_i3d.py": [["rgb", "flow", "rgb+flow"], ["imagenet", "scratch"]],
    "kinetics400_two_stream.py": [["imagenet", "scratch"]],
    "kinetics400_two_stream_fused.py": [["imagenet", "scratch"]],
    "kinetics400_convnet_lstm.py": [["imagenet", "scratch"]],
    "kinetics400_conv3d.py": [[]],
    "finetune.py": [["ucf101", "hmdb51"], ["rgb", "flow", "rgb+flow"], ["1", "2", "3"],
                    ["full", "last_layer"]],
}
HARDWARE_KEYS = {"batch_size", "eval.batch_size", "mesh.data", "mesh.fsdp", "dtype",
                 "log_every_steps"}


def flat(config, prefix=""):
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_config_file_is_listed_here():
    assert sorted(p.name for p in experiments_dir().glob("*.py")) == sorted(VARIANTS)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_loads_locked_and_checked(name):
    path = experiments_dir() / name
    groups = VARIANTS[name]
    for combination in itertools.product(*groups):
        arg = ",".join(c for c in combination if c)
        config = load_config(f"{path}:{arg}" if arg else path)
        assert config.is_locked
        check_config(config)
        if name == "default.py":
            continue
        assert get_docstring(path), name
        unlocked_base = flat(config)
        for preset in PRESETS:
            with_preset = flat(load_config(f"{path}:{','.join([arg, preset]) if arg else preset}"))
            differing = {k for k in unlocked_base if unlocked_base[k] != with_preset[k]}
            assert differing <= HARDWARE_KEYS, (name, arg, preset, differing - HARDWARE_KEYS)


def get_docstring(path):
    import ast

    return ast.get_docstring(ast.parse(path.read_text()))


def test_the_paper_recipe_is_what_the_configs_say():
    i3d = load_config(f"{experiments_dir() / 'kinetics400_i3d.py'}:flow,scratch")
    assert (i3d.dataset, i3d.model.architecture, i3d.input.streams) == (
        "kinetics/400_flow", "i3d", "flow")
    assert i3d.optimizer.name == "sgd" and i3d.optimizer.momentum == 0.9
    assert i3d.total_steps == 110_000 and i3d.schedule.boundaries == (60_000, 95_000)
    # Stored at the short side 256 by the builders, so cropped as decoded.
    assert (i3d.input.resize_short_side, i3d.input.crop_size, i3d.input.flow.num_frames) == (
        None, 224, 64)
    assert i3d.eval.whole_video_frames == 250 and i3d.init_from == ""
    fixed = load_config(f"{experiments_dir() / 'finetune.py'}:last_layer,2,rgb,hmdb51")
    assert (fixed.dataset, fixed.trainable, fixed.batch_norm, fixed.total_steps) == (
        "hmdb51/2", "classifier", "frozen", 5_000)
    assert fixed.init_from == "runs/i3d_rgb"


def test_an_unknown_argument_is_refused_naming_the_file_and_the_choices():
    with pytest.raises(ValueError, match=r"kinetics400_i3d.py: unknown argument 'rbg' "
                                         r"\(known: stream: rgb, flow, rgb\+flow"):
        load_config(f"{experiments_dir() / 'kinetics400_i3d.py'}:rbg")
    with pytest.raises(ValueError, match="two values for stream"):
        load_config(f"{experiments_dir() / 'kinetics400_i3d.py'}:rgb,flow")
