"""What a resume checks (i3d_jax/train/resume.py), in process on one device: a
latest checkpoint that is not whole is set aside and the run resumes from the one
before, to the parameters of a run never disturbed; a changed config is refused
or accepted key by key, and each accepted change is recorded.
"""
import json
import logging
import math
import shutil

import pytest

from i3d_jax import checkpoints
from test_train import tiny_config
from test_train_in_process import on_first_devices


def conv3d_config(data_dir, **overrides):
    return tiny_config(data_dir, **{"model.architecture": "conv3d", "total_steps": 6,
                                    "checkpoint_every_steps": 2, "keep_checkpoints": 10,
                                    **overrides})


def params_sha256(workdir) -> str:
    from i3d_jax.models.stats import params_sha256 as sha256

    return sha256(checkpoints.load_training_variables(workdir)[1]["params"])


def rows(workdir, kind):
    return [r["step"] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == kind]


@pytest.fixture(scope="module")
def six_steps(tiny_data_dir, tmp_path_factory):
    """A 6-step run (checkpoints at 2, 4 and 6) and its parameters' sha256."""
    from i3d_jax.train import loop

    workdir = tmp_path_factory.mktemp("resume") / "run"
    with pytest.MonkeyPatch.context() as patch:
        on_first_devices(patch, 1)
        loop.train_and_evaluate(conv3d_config(tiny_data_dir), workdir)
    return workdir, params_sha256(workdir)


@pytest.fixture
def copy_of_run(six_steps, tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    shutil.copytree(six_steps[0], workdir)
    on_first_devices(monkeypatch, 1)
    return workdir


def largest_array_file(step_dir):
    return max((step_dir / "state").rglob("ocdbt.process_0/d/*"), key=lambda p: p.stat().st_size)


def truncate(step_dir):
    path = largest_array_file(step_dir)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_corrupt_latest_checkpoints_are_set_aside_and_the_run_resumes_before_them(
        copy_of_run, six_steps, tiny_data_dir):
    """Step 6's largest array file truncated, step 4's deleted: both set aside with
    their reason, and the run resumes from step 2 to the undisturbed run's parameters
    (one training run for both: each costs a compile)."""
    from i3d_jax.train import loop

    truncate(copy_of_run / "checkpoints" / "6")
    largest_array_file(copy_of_run / "checkpoints" / "4").unlink()
    # What eval, predict and init_from read of a workdir: its newest whole step.
    assert checkpoints.load_training_variables(copy_of_run)[2] == 2
    loop.train_and_evaluate(conv3d_config(tiny_data_dir), copy_of_run)
    aside = copy_of_run / "checkpoints.corrupt"
    assert "state unreadable: OUT_OF_RANGE" in (aside / "6" / "reason.txt").read_text()
    assert "(a data file is missing)" in (aside / "4" / "reason.txt").read_text()
    assert (aside / "6" / "state").is_dir() and (aside / "4" / "state").is_dir()  # moved
    assert checkpoints.training_manager(copy_of_run, read_only=True).all_steps() == [2, 4, 6]
    assert params_sha256(copy_of_run) == six_steps[1]
    assert rows(copy_of_run, "train") == [1, 2, 3, 4, 5, 6] and rows(copy_of_run, "eval") == [6]


def test_no_whole_checkpoint_is_an_error_naming_the_folder(copy_of_run, tiny_data_dir):
    """Every step's commit marker deleted (saves cut short on a file system without
    atomic renames): all set aside, and an error on this and every rerun."""
    from i3d_jax.train import loop

    for step in (2, 4, 6):
        (copy_of_run / "checkpoints" / str(step) / "commit_success.txt").unlink()
    aside = copy_of_run / "checkpoints.corrupt"
    with pytest.raises(FileNotFoundError, match=f"holds no whole checkpoint.*{aside}"):
        loop.train_and_evaluate(conv3d_config(tiny_data_dir), copy_of_run)
    assert sorted(p.name for p in aside.iterdir()) == ["2", "4", "6"]
    assert "no commit marker" in (aside / "6" / "reason.txt").read_text()
    with pytest.raises(FileNotFoundError, match="holds no whole checkpoint"):  # every time
        loop.train_and_evaluate(conv3d_config(tiny_data_dir), copy_of_run)


def test_changes_that_misread_the_saved_run_are_refused_before_set_up(copy_of_run,
                                                                      tiny_data_dir,
                                                                      monkeypatch):
    from i3d_jax.train import loop

    monkeypatch.setattr(loop, "setup", lambda *a: pytest.fail("set up despite the refusal"))
    saved = (copy_of_run / "config.json").read_text()
    config = conv3d_config(tiny_data_dir, **{"batch_size": 16, "seed": 1,
                                             "input.rgb.stride": 2, "total_steps": 8})
    with pytest.raises(ValueError) as refused:
        loop.train_and_evaluate(config, copy_of_run)
    message = str(refused.value)
    for line in ("batch_size: 8 -> 16", "seed: 0 -> 1", "input.rgb.stride: 1 -> 2",
                 "resume_with_changes=True"):
        assert line in message
    assert "total_steps" not in message  # accepted: it only shapes what comes next
    assert (copy_of_run / "config.json").read_text() == saved
    assert not (copy_of_run / "config_history.jsonl").exists()


def test_what_a_resume_compares(tmp_path):
    from i3d_jax.configs import demo_config
    from i3d_jax.train.resume import ABSENT, _changeable, compare_configs

    for key in ("total_steps", "schedule.learning_rate", "optimizer.weight_decay",
                "log_every_steps", "keep_checkpoints", "mesh.fsdp", "eval.num_clips",
                "model.kernels", "input.threads"):
        assert _changeable(key), key
    for key in ("batch_size", "seed", "dataset", "train_split", "grad_accum_steps",
                "input.crop_size", "input.rgb.num_frames", "input.shuffle_buffer",
                "model.dropout_rate", "loss.label_smoothing", "batch_norm", "trainable"):
        assert not _changeable(key), key
    assert not _changeable("evaluation")  # a prefix covers its group only

    config = demo_config()
    saved = json.loads(config.to_json_best_effort())
    saved["model"]["kernels"] = "cpu"  # what the run resolved "auto" to
    saved["input"]["threads"] = 4
    del saved["eval"]["num_crops"]  # a key a later version added
    saved["retired_key"] = 1  # one it removed
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert not compare_configs(config, tmp_path)  # no checkpoint: a new run, nothing to compare
    (tmp_path / "checkpoints" / "2").mkdir(parents=True)
    changes = compare_configs(config, tmp_path)
    assert changes.accepted == {"eval.num_crops": (ABSENT, 1), "input.threads": (4, 0),
                                "retired_key": (1, ABSENT)}
    assert changes.forced == {}
    assert not compare_configs(config, tmp_path / "elsewhere")  # nothing saved: no changes


def test_accepted_and_forced_changes_are_logged_and_recorded(copy_of_run, tiny_data_dir,
                                                             caplog):
    from i3d_jax.train import loop

    config = conv3d_config(tiny_data_dir, **{"total_steps": 8, "schedule.name": "cosine",
                                             "log_every_steps": 2, "seed": 1,
                                             "resume_with_changes": True})
    with caplog.at_level(logging.INFO, logger="absl"):
        loop.train_and_evaluate(config, copy_of_run)
        log = caplog.text
    cosine_at_6 = 0.01 * 0.5 * (1 + math.cos(math.pi * 6 / 8))
    for line in ("total_steps: 6 -> 8", "schedule.name: 'constant' -> 'cosine'",
                 "log_every_steps: 1 -> 2", "(resume_with_changes): seed: 0 -> 1",
                 f"learning rate at step 6: 0.01 under the saved schedule -> {cosine_at_6:.6g}"):
        assert line in log
    [entry] = map(json.loads, (copy_of_run / "config_history.jsonl").read_text().splitlines())
    assert entry["step"] == 6 and entry["forced"] == ["seed"]
    assert entry["changes"] == {"total_steps": [6, 8], "schedule.name": ["constant", "cosine"],
                                "log_every_steps": [1, 2], "seed": [0, 1]}
    assert entry["learning_rate_at_step"] == pytest.approx([0.01, cosine_at_6])
    saved = json.loads((copy_of_run / "config.json").read_text())
    assert saved["total_steps"] == 8 and saved["seed"] == 1  # the new config is the run's
    assert rows(copy_of_run, "train") == [1, 2, 3, 4, 5, 6, 8]
