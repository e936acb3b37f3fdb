"""The paper's configs on real data layouts, end to end: a tiny Kinetics release
(CSVs and mp4 files written here) built with the kinetics builder trains the
Kinetics-400 I3D config from the command line; a tiny UCF-101 release trains the
UCF-101 fine-tuning config (last layer only) from that run. Only sizes are
overridden, so a wrong key, dataset name or path in a paper config fails here."""
import json

import numpy as np
import pytest

from test_datasets import build, kinetics_release, ucf101_release
from test_train import cli_env
from i3d_jax.configs import experiments_dir

SIZES = ["--config.batch_size=2", "--config.eval.batch_size=1",
         "--config.model.width_multiplier=0.125", "--config.input.rgb.num_frames=8",
         "--config.input.crop_size=112", "--config.eval.whole_video_frames=16",
         "--config.total_steps=2", "--config.checkpoint_every_steps=2",
         "--config.log_every_steps=1", "--config.input.shuffle_buffer=4"]


def train(config, workdir, data_dir, compile_cache, *extra):
    import subprocess
    import sys

    env = cli_env(compile_cache)
    env["XLA_FLAGS"] = env["XLA_FLAGS"].replace("device_count=8", "device_count=1")
    result = subprocess.run(
        [sys.executable, "-m", "i3d_jax", "train", "--workdir", str(workdir), "--config",
         str(experiments_dir() / config), f"--config.data_dir={data_dir}", *SIZES, *extra],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in rows if r["kind"] == "train")
    assert [r["kind"] for r in rows].count("eval") == 1
    return result.stderr


@pytest.fixture(scope="module")
def kinetics_run(tmp_path_factory, compile_cache):
    root = tmp_path_factory.mktemp("kinetics")
    build("kinetics/400", root / "data", kinetics_release(root / "manual"))
    workdir = root / "i3d_rgb"
    # Kinetics-700-style unlabelled test split here: evaluate on validation.
    log = train("kinetics400_i3d.py:rgb,scratch,cpu", workdir, root / "data", compile_cache,
                "--config.eval_split=validation")
    assert "training i3d on kinetics/400" in log
    return workdir


def test_the_kinetics_i3d_config_trains_on_a_built_kinetics(kinetics_run):
    config = json.loads((kinetics_run / "config.json").read_text())
    assert config["optimizer"]["name"] == "sgd" and config["schedule"]["name"] == "piecewise"
    assert config["dataset"] == "kinetics/400"


def test_the_ucf101_last_layer_config_fine_tunes_the_kinetics_run(kinetics_run, tmp_path,
                                                                 compile_cache):
    from i3d_jax import checkpoints

    build("ucf101/1", tmp_path / "data", ucf101_release(tmp_path / "manual", archive=False))
    workdir = tmp_path / "ucf101_rgb_1"
    log = train("finetune.py:ucf101,rgb,1,last_layer,cpu", workdir, tmp_path / "data",
                compile_cache, f"--config.init_from={kinetics_run}")
    assert "re-initialised 2 (classifier)" in log  # 3 Kinetics classes -> 2 UCF-101 ones
    # Fixed features: every trunk array and BatchNorm statistic is the Kinetics run's.
    _, kinetics, _ = checkpoints.load_training_variables(kinetics_run)
    _, tuned, _ = checkpoints.load_training_variables(workdir)
    import jax

    compared = 0
    for path, value in jax.tree_util.tree_leaves_with_path(tuned):
        keys = [k.key for k in path]
        if "Logits" in keys:
            continue
        source = kinetics
        for k in keys:
            source = source[k]
        np.testing.assert_array_equal(value, source, err_msg="/".join(keys))
        compared += 1
    assert compared > 100


def test_your_own_videos_in_four_commands(tmp_path, compile_cache):
    """The README's path: a folder of clips -> a dataset -> a fine-tuned, evaluated,
    reported model, from the Kinetics-400 weights (sizes cut for the test only)."""
    import subprocess
    import sys

    from fake_videos import write_corrupt_video, write_video

    clips = tmp_path / "my_clips"
    for split, count in (("train", 3), ("test", 2)):
        for label, step in (("brightening", 1), ("darkening", -1)):
            for i in range(count):
                write_video(clips / split / label / f"{i}.mp4", num_frames=12,
                            first_level=(i * 3) if step > 0 else 19 - i * 3)
    write_corrupt_video(clips / "train" / "darkening" / "bad.mp4")
    env = cli_env(compile_cache)
    env["XLA_FLAGS"] = env["XLA_FLAGS"].replace("device_count=8", "device_count=1")

    def run(*args):
        done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
        return done

    data = tmp_path / "tfds"
    run("-m", "i3d_jax.datasets.build", "video_folder", "--config=rgb",
        f"--manual_dir={clips}", f"--data_dir={data}")
    workdir = tmp_path / "runs" / "mine"
    trained = run("-m", "i3d_jax", "train", "--workdir", str(workdir), "--config", "own_videos",
                  f"--config.data_dir={data}", "--config.total_steps=2", "--config.batch_size=2",
                  "--config.eval.batch_size=2", "--config.input.crop_size=112",
                  "--config.input.rgb.num_frames=8", "--config.eval.whole_video_frames=12",
                  "--config.log_every_steps=1")
    assert "init_from kinetics400-rgb" in trained.stderr or "from the weights of kinetics400-rgb" \
        in trained.stderr
    evaluated = run("-m", "i3d_jax", "eval", "--workdir", str(workdir), "--json")
    record = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert record["num_examples"] == 4 and set(record["per_class_accuracy"]) == {
        "brightening", "darkening"}
    assert "orbax" not in evaluated.stderr.lower()  # the libraries' INFO lines stay out
    reported = run("-m", "i3d_jax", "report", str(workdir))
    assert (workdir / "report.png").exists() and "mine" in reported.stdout
