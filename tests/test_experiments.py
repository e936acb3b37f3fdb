"""Every config in experiments/ loads, locks and passes the trainer's checks, with
every argument it documents; presets change only the hardware keys; no paper
config takes a value of the demo's that it does not set itself."""
import copy
import itertools

import pytest

import i3d_jax.configs
from i3d_jax.configs import PRESETS, experiments_dir, load_config
from i3d_jax.train import check_config

VARIANTS = {
    "synthetic_demo.py": [[]],
    "kinetics400_i3d.py": [["rgb", "flow", "rgb+flow"], ["imagenet", "scratch"]],
    "kinetics400_two_stream.py": [["imagenet", "scratch"]],
    "kinetics400_two_stream_fused.py": [["imagenet", "scratch"]],
    "kinetics400_convnet_lstm.py": [["imagenet", "scratch"]],
    "kinetics400_conv3d.py": [[]],
    "own_videos.py": [["last_layer", "full"]],
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
    assert sorted(p.name for p in experiments_dir().glob("*.py")) == sorted(
        [*VARIANTS, "default.py", "__init__.py"])


def test_the_declarations_alone_are_no_run():
    # default.py says what each key means; a run must choose its dataset, length,
    # batch and learning rate.
    with pytest.raises(ValueError, match="config.dataset is empty"):
        check_config(load_config(experiments_dir() / "default.py"))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_loads_locked_and_checked(name):
    path = experiments_dir() / name
    groups = VARIANTS[name]
    for combination in itertools.product(*groups):
        arg = ",".join(c for c in combination if c)
        config = load_config(f"{path}:{arg}" if arg else path)
        assert config.is_locked
        check_config(config)
        if name == "synthetic_demo.py":
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


def _perturbed(config):
    """A copy of `config` with every value changed (same type): a key whose value
    follows it into a config built on top was not set by that config."""
    config = copy.deepcopy(config)  # keeps the placeholders' declared types
    config.unlock()
    for key, value in list(flat(config).items()):
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        if isinstance(value, bool):
            node[leaf] = not value
        elif isinstance(value, (int, float)):
            node[leaf] = value * 3 + 7
        elif isinstance(value, str):
            node[leaf] = value + "~"
        elif isinstance(value, tuple):
            node[leaf] = value + (7919,)
        else:  # None: a placeholder of int or float
            for candidate in (7919, 0.7919):
                try:
                    node[leaf] = candidate
                    break
                except TypeError:
                    continue
    return config


def inherited_keys(spec, monkeypatch) -> dict:
    """{key: value} of the keys the config of `spec` takes from what it is built on
    (experiments/default.py, or the demo) rather than setting them."""
    real = flat(load_config(spec))
    base_default, base_load = i3d_jax.configs.default_config, i3d_jax.configs.load_config
    demo = (experiments_dir() / "synthetic_demo.py").resolve()

    def load_perturbed_demo(other, lock=True):
        path, _ = i3d_jax.configs.resolve_config(other)
        if path.resolve() == demo:
            return _perturbed(base_load(other, lock=False))
        return base_load(other, lock)

    monkeypatch.setattr(i3d_jax.configs, "default_config",
                        lambda lock=True: _perturbed(base_default(lock=False)))
    monkeypatch.setattr(i3d_jax.configs, "load_config", load_perturbed_demo)
    shifted = flat(base_load(spec))
    monkeypatch.undo()
    return {k: v for k, v in real.items() if shifted[k] != v}


def demo_values(monkeypatch) -> dict:
    """{key: value} of the keys the demo config sets."""
    demo = flat(load_config(experiments_dir() / "synthetic_demo.py"))
    inherited = inherited_keys(experiments_dir() / "synthetic_demo.py", monkeypatch)
    return {k: v for k, v in demo.items() if k not in inherited}


def demo_values_taken(spec, monkeypatch) -> list[str]:
    """The keys of `spec`'s config that hold the demo's value without setting it."""
    demo = demo_values(monkeypatch)
    return sorted(k for k, v in inherited_keys(spec, monkeypatch).items()
                  if k in demo and demo[k] == v)


@pytest.mark.parametrize("name", sorted(set(VARIANTS) - {"synthetic_demo.py"}))
def test_no_paper_config_takes_a_demo_value_it_does_not_set(name, monkeypatch):
    groups = VARIANTS[name]
    for combination in itertools.product(*groups):
        arg = ",".join(c for c in combination if c)
        spec = f"{experiments_dir() / name}:{arg}" if arg else experiments_dir() / name
        assert demo_values_taken(spec, monkeypatch) == [], (name, arg)


def test_a_config_built_on_the_demo_is_caught(tmp_path, monkeypatch):
    # The mistake the check is for: a paper config that starts from the demo.
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from i3d_jax.configs import load_config, experiments_dir, set_values\n"
        "def get_config(arg=None):\n"
        "    config = load_config(experiments_dir() / 'synthetic_demo.py', lock=False)\n"
        "    set_values(config, {'dataset': 'kinetics/400', 'total_steps': 110000})\n"
        "    return config\n")
    taken = demo_values_taken(bad, monkeypatch)
    assert "schedule.learning_rate" in taken and "optimizer.name" in taken
    assert "total_steps" not in taken and "dataset" not in taken
