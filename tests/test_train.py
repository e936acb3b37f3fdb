"""The trainer as users run it: `i3d-jax train` / `eval` / `predict` / `summary` on a
tiny generated dataset, resume after SIGKILL and SIGTERM, init_from a workdir (every
architecture, the non-finite stop and init_from named weights, in process, are in
test_train_in_process.py).

Runs share XLA's persistent compilation cache (one folder for the session), so the
same program compiled by several runs is compiled once.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from i3d_jax import checkpoints
from i3d_jax.configs import demo_config
from test_cli import run_cli

# The tiny dataset (32x32, 20 frames, 32 train / 16 test clips) and sizes to match.
# 24x24 crops keep every convolution under the CPU kernels' ONEDNN_MIN_FLOPS (32x32 put the
# first over it): a step holding oneDNN's custom call cannot be serialized, and
# these runs share their compiled steps through XLA's persistent cache (a repeated
# 4-step run 43 -> 19 s).
TINY = ["--config.dataset=synthetic_motion/tiny", "--config.batch_size=8",
        "--config.eval.batch_size=8", "--config.input.crop_size=24",
        "--config.input.rgb.num_frames=8", "--config.input.flow.num_frames=8",
        "--config.eval.whole_video_frames=0", "--config.model.width_multiplier=0.125",
        "--config.log_every_steps=1", "--config.input.shuffle_buffer=8",
        "--config.schedule.warmup_steps=0", "--config.schedule.name=constant",
        "--config.schedule.learning_rate=0.01"]


def cli_env(compile_cache):
    env = dict(os.environ)
    env.update(JAX_COMPILATION_CACHE_DIR=str(compile_cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


def i3d_jax(args, compile_cache, check=True, timeout=600):
    result = subprocess.run([sys.executable, "-m", "i3d_jax", *args], capture_output=True,
                            text=True, env=cli_env(compile_cache), timeout=timeout)
    if check and result.returncode:
        raise AssertionError(f"i3d-jax {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stderr[-4000:]}")
    return result


def train_args(workdir, data_dir, *extra):
    return ["train", "--workdir", str(workdir), f"--config.data_dir={data_dir}", *TINY, *extra]


def params_sha256(workdir, compile_cache=None) -> str:
    """What `i3d-jax summary --checkpoint DIR --json` prints as params_sha256 (that
    command is run in test_eval_json_and_predict_and_summary_from_a_workdir; here in
    process, saving a process start per call)."""
    from i3d_jax.models.stats import params_sha256 as sha256

    return sha256(checkpoints.load_training_variables(workdir)[1]["params"])


@pytest.fixture(scope="session")
def trained(tiny_data_dir, compile_cache, tmp_path_factory):
    """A workdir trained 4 steps (checkpoints at 2 and 4)."""
    workdir = tmp_path_factory.mktemp("run") / "demo"
    result = i3d_jax(train_args(workdir, tiny_data_dir, "--config.total_steps=4",
                                "--config.checkpoint_every_steps=2"), compile_cache)
    return workdir, result


def test_train_writes_config_checkpoints_metrics_and_logs_progress(trained):
    workdir, result = trained
    log = result.stderr
    assert "starting a new run from scratch" in log
    assert "step 4/4" in log and "clips/s" in log and "ETA" in log and "lr " in log
    assert "eval on test: top-1" in log
    config = json.loads((workdir / "config.json").read_text())
    assert config["total_steps"] == 4 and config["dataset"] == "synthetic_motion/tiny"
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                  if p.name.isdigit()) == [2, 4]
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    for key in ("loss", "accuracy", "learning_rate", "clips_per_sec"):
        assert all(np.isfinite(r[key]) for r in train_rows)
    evals = [r for r in rows if r["kind"] == "eval"]
    assert len(evals) == 1 and evals[0]["num_examples"] == 16
    assert any(p.name.startswith("events.out.tfevents") for p in workdir.iterdir())


def test_rerun_of_a_finished_run_trains_nothing(trained, tiny_data_dir, compile_cache):
    workdir, _ = trained
    before = params_sha256(workdir, compile_cache)
    result = i3d_jax(train_args(workdir, tiny_data_dir, "--config.total_steps=4",
                                "--config.checkpoint_every_steps=2"), compile_cache)
    assert "already finished: step 4 of 4" in result.stderr
    assert params_sha256(workdir, compile_cache) == before


def test_eval_json_and_predict_and_summary_from_a_workdir(trained, tiny_data_dir, compile_cache,
                                                          tmp_path, capsys):
    workdir, _ = trained
    result = i3d_jax(["eval", "--workdir", str(workdir), "--json"], compile_cache)
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(record) == {"step", "top1", "top5", "mean_class_accuracy", "num_examples",
                           "per_class_accuracy", "confusion_png"}
    assert record["step"] == 4 and record["num_examples"] == 16
    # 16 test videos, 2 of each of the 8 classes: each class's accuracy is 0, 1/2 or 1,
    # and their mean is the mean class accuracy.
    per_class = record["per_class_accuracy"]
    assert len(per_class) == 8 and set(per_class.values()) <= {0.0, 0.5, 1.0}
    assert np.mean(list(per_class.values())) == pytest.approx(record["mean_class_accuracy"])
    assert np.mean(list(per_class.values())) == pytest.approx(record["top1"])  # balanced split
    from PIL import Image

    with Image.open(record["confusion_png"]) as image:
        assert image.format == "PNG" and min(image.size) > 200
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    last_eval = [r for r in rows if r["kind"] == "eval"][-1]
    assert record["top1"] == pytest.approx(last_eval["top1"])

    step2 = i3d_jax(["eval", "--workdir", str(workdir), "--step", "2", "--json"], compile_cache)
    assert json.loads(step2.stdout.strip().splitlines()[-1])["step"] == 2

    # summary and predict in process (a process start each saved; the command line's
    # own parsing and printing are the same code).
    code, out, _ = run_cli(["summary", "--checkpoint", str(workdir), "--json"], capsys)
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["arch"] == "i3d" and summary["step"] == 4 and summary["params"] > 0
    assert summary["params_sha256"] == params_sha256(workdir)

    clip = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "clip.npy", clip)
    code, out, _ = run_cli(["predict", str(tmp_path / "clip.npy"), "--checkpoint", str(workdir),
                            "--json", "--top-k", "3"], capsys)
    assert code == 0
    prediction = json.loads(out.strip().splitlines()[-1])
    assert len(prediction["logits"]) == 8  # the dataset's 8 classes
    assert prediction["top_k"][0]["label"] in {"up_slow", "up_fast", "down_slow", "down_fast",
                                               "sideways_slow", "sideways_fast", "rotate_slow",
                                               "rotate_fast"}
    # The checkpoint's own model gives the same logits.
    from i3d_jax.checkpoints import load_pretrained

    metadata, variables = load_pretrained(workdir)
    model = metadata.build_model()
    expected = model.apply(variables, clip[None], train=False)[0]
    np.testing.assert_allclose(prediction["logits"], expected, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="session")
def finetuned(trained, tiny_data_dir, compile_cache, tmp_path_factory):
    """A second run: one step from the trained run's weights (init_from a workdir)."""
    workdir = tmp_path_factory.mktemp("finetune") / "run"
    result = i3d_jax(train_args(workdir, tiny_data_dir, "--config.total_steps=1",
                                f"--config.init_from={trained[0]}"), compile_cache)
    return workdir, result


def last_eval_top1(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()
            if '"eval"' in line][-1]["top1"]


def test_eval_fuses_two_runs(trained, finetuned, compile_cache):
    """Each run's own top-1 in the fused record is the one its training logged; the
    fused figures cover the same 16 videos."""
    workdir, other = trained[0], finetuned[0]
    fused = json.loads(i3d_jax(["eval", "--workdir", str(workdir), "--fuse", str(other),
                                "--json"], compile_cache).stdout.strip().splitlines()[-1])
    assert fused["runs"] == {str(workdir): {"top1": pytest.approx(last_eval_top1(workdir))},
                             str(other): {"top1": pytest.approx(last_eval_top1(other))}}
    assert fused["num_examples"] == 16 and fused["confusion_png"].endswith("_fused.png")


def test_a_typo_in_a_key_is_refused_naming_it(tmp_path, compile_cache):
    started = time.time()
    result = i3d_jax(["train", "--workdir", str(tmp_path / "w"), "--config.totl_steps=3"],
                     compile_cache, check=False)
    assert result.returncode != 0
    assert "totl_steps" in result.stderr
    assert not (tmp_path / "w").exists()
    assert time.time() - started < 60


# The 3D-ConvNet compiles in seconds (resuming knows no architecture); 40 steps,
# each saved or logged, take seconds.
RESUMABLE = ["--config.model.architecture=conv3d", "--config.total_steps=40",
             "--config.checkpoint_every_steps=2", "--config.keep_checkpoints=40",
             "--config.eval_every_steps=20"]


@pytest.fixture(scope="session")
def straight_run(tiny_data_dir, compile_cache, tmp_path_factory):
    """params_sha256 of 40 steps never interrupted."""
    workdir = tmp_path_factory.mktemp("straight") / "run"
    i3d_jax(train_args(workdir, tiny_data_dir, *RESUMABLE), compile_cache)
    return params_sha256(workdir, compile_cache)


def stop_with_sigterm_once_started(workdir, data_dir, compile_cache) -> str:
    """The run launched and sent SIGTERM once set up (before any step); its log."""
    args = [sys.executable, "-m", "i3d_jax", *train_args(workdir, data_dir, *RESUMABLE)]
    process = subprocess.Popen(args, env=cli_env(compile_cache), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    log = []
    try:
        for line in process.stderr:  # set-up done: the notice comes before any step
            log.append(line)
            if "starting a new run" in line:
                process.send_signal(signal.SIGTERM)
                break
        log.extend(process.stderr)
    finally:
        process.wait(timeout=300)
    log = "".join(log)
    assert process.returncode == 0, log[-3000:]
    return log


# After the SIGTERM, the run is killed (SIGKILL, by tests/kill_at.py) at each moment
# in turn, the same command after each: mid-save (step 6's arrays in flight),
# halfway through a metrics row, at the start of the step-20 eval, in the wait for
# the last save. benchmarks/kill_anywhere.py kills at 20 random moments.
KILLS = [("save", 3), ("metrics", 10), ("eval", 1), ("final-wait", 1)]


def test_a_run_stopped_by_sigterm_then_killed_at_four_moments_ends_as_if_never_stopped(
        tiny_data_dir, compile_cache, tmp_path, straight_run):
    """SIGTERM saves at the next step and exits 0; each SIGKILL loses nothing but the
    steps since the last checkpoint. In the end: bitwise the parameters of a run never
    interrupted, each step's row (and each eval's) once in metrics.jsonl, and no
    killed run's lock outliving it."""
    workdir = tmp_path / "interrupted"
    log = stop_with_sigterm_once_started(workdir, tiny_data_dir, compile_cache)
    assert "SIGTERM: saved step 1" in log
    assert checkpoints.training_manager(workdir, read_only=True).all_steps() == [1]
    kill_at = os.path.join(os.path.dirname(__file__), "kill_at.py")
    for moment, n in KILLS:
        result = subprocess.run(
            [sys.executable, kill_at, moment, str(n), *train_args(workdir, tiny_data_dir,
                                                                  *RESUMABLE)],
            env=cli_env(compile_cache), capture_output=True, text=True, timeout=600)
        assert result.returncode == -signal.SIGKILL, (moment, result.stderr[-3000:])
        assert "resuming from step" in result.stderr
    resumed = i3d_jax(train_args(workdir, tiny_data_dir, *RESUMABLE), compile_cache)
    assert "resuming from step" in resumed.stderr
    assert params_sha256(workdir, compile_cache) == straight_run
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 41))
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [20, 40]
    assert not list((workdir / "checkpoints").glob("*tmp*"))  # what killed saves left: gone


def test_a_second_run_on_a_live_workdir_is_refused(tmp_path):
    from i3d_jax.train import workdir_lock

    with workdir_lock(tmp_path):
        with pytest.raises(RuntimeError, match=f"in use by a live run \\(pid {os.getpid()} "):
            with workdir_lock(tmp_path):
                pass
    with workdir_lock(tmp_path):  # released when the run ends
        pass


def test_init_from_a_workdir_is_not_a_resume(finetuned):
    _, result = finetuned
    assert "init_from" in result.stderr and "resuming" not in result.stderr
    assert "re-initialised 0 (classifier)" in result.stderr  # same classes: all loaded


# --------------------------------------------------------------------------
# The default config at the tiny dataset's sizes, for the in-process runs of
# test_train_in_process.py, test_multihost.py and test_resume_topology.py.


def tiny_config(data_dir, **overrides):
    config = demo_config()
    for arg in TINY:
        key, value = arg.removeprefix("--config.").split("=")
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], str) else value
    config.data_dir = str(data_dir)
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config
