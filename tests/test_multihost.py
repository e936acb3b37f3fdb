"""Two processes x 4 CPU devices over localhost (gloo) train as one process x 8
devices does, on the same global batches (the input's order does not depend on the
process count), and their checkpoint continues the same stream in a single process.
"""
import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from test_train import TINY, cli_env, tiny_config

# BatchNorm frozen: sums over 8 devices in two processes round otherwise than over 8
# in one (1e-7), and BatchNorm on the statistics of these 8 tiny clips amplifies that
# a hundredfold a step (measured: 5e-7 at step 2, 1e-4 at step 3).
STEPS = ["--config.model.architecture=conv3d", "--config.total_steps=3",
         "--config.checkpoint_every_steps=3", "--config.batch_norm=frozen"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def train_rows(workdir):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "train"]


def launch_two_processes(workdir, data_dir, compile_cache, steps):
    port = free_port()
    env = cli_env(compile_cache)
    env["XLA_FLAGS"] = env["XLA_FLAGS"].replace("device_count=8", "device_count=4")
    return [
        subprocess.Popen(
            [sys.executable, "-m", "i3d_jax", "train", "--workdir", str(workdir),
             f"--config.data_dir={data_dir}", *TINY, *steps,
             "--coordinator_address", f"localhost:{port}", "--num_processes", "2",
             "--process_id", str(i)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]


@pytest.fixture(scope="module")
def two_process_run(tiny_data_dir, compile_cache, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("multihost") / "run"
    processes = launch_two_processes(workdir, tiny_data_dir, compile_cache, STEPS)
    logs = []
    for p in processes:
        _, err = p.communicate(timeout=300)
        logs.append(err)
    for i, (p, log) in enumerate(zip(processes, logs)):
        assert p.returncode == 0, f"process {i}:\n{log[-3000:]}"
    return workdir, logs


ONE_PROCESS = {"model.architecture": "conv3d", "total_steps": 4, "checkpoint_every_steps": 3,
               "batch_norm": "frozen"}


@pytest.fixture(scope="module")
def one_process_run(tiny_data_dir, tmp_path_factory):
    """The same job uninterrupted in this process (8 devices), one step further."""
    from i3d_jax import sharding
    from i3d_jax.train import loop as train

    assert sharding.data_parallel_size(sharding.make_mesh(-1, 1)) == 8
    workdir = tmp_path_factory.mktemp("one_process") / "run"
    train.train_and_evaluate(tiny_config(tiny_data_dir, **ONE_PROCESS), workdir)
    return train_rows(workdir)


def test_two_processes_give_the_losses_of_one(two_process_run, one_process_run):
    workdir, logs = two_process_run
    assert "step 3/3" in logs[0] and "step 3/3" not in logs[1]  # process 0 speaks for both
    assert (workdir / "checkpoints" / "3" / "input" / "process_1").is_dir()
    two = train_rows(workdir)
    assert [r["step"] for r in two] == [1, 2, 3]
    np.testing.assert_allclose([r["loss"] for r in two],
                               [r["loss"] for r in one_process_run[:3]], rtol=1e-5)


def test_a_two_process_checkpoint_continues_the_stream_in_one_process(
        two_process_run, one_process_run, tiny_data_dir, tmp_path, caplog):
    import logging
    import shutil

    from i3d_jax import checkpoints

    from i3d_jax.train import loop as train

    workdir = tmp_path / "resumed"
    shutil.copytree(two_process_run[0], workdir)
    with caplog.at_level(logging.INFO, logger="i3d_jax.checkpoints"):
        train.train_and_evaluate(tiny_config(tiny_data_dir, **ONE_PROCESS), workdir)
    assert "input position of process 1 of 2, continued by 1 processes" in caplog.text
    assert checkpoints.training_manager(workdir, read_only=True).latest_step() == 4
    rows = train_rows(workdir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # Step 4's batch is the uninterrupted run's: the stream went on, not again.
    np.testing.assert_allclose(rows[-1]["loss"], one_process_run[-1]["loss"], rtol=1e-5)


def test_bad_multihost_flags_are_refused_before_any_training(tmp_path, compile_cache):
    result = subprocess.run(
        [sys.executable, "-m", "i3d_jax", "train", "--workdir", str(tmp_path / "w"),
         "--coordinator_address", "localhost:1", "--num_processes", "2", "--process_id", "2"],
        env=cli_env(compile_cache), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--process_id 2 is out of range for --num_processes 2" in result.stderr
    assert not (tmp_path / "w").exists()


def test_a_live_two_process_run_refuses_a_second_launch_and_saves_on_sigterm(
        tiny_data_dir, compile_cache, tmp_path):
    """A second launch of the job on its live workdir is refused by both of its
    processes (the lock's verdict is process 0's, shared). Then what a cluster does
    before it takes a slice: SIGTERM to every process. They agree on a step
    (jax.distributed's preemption sync, through Orbax's `reached_preemption`), save
    it together and exit 0."""
    import signal

    from i3d_jax import checkpoints

    workdir = tmp_path / "preempted"
    steps = [s for s in STEPS if "total_steps" not in s and "checkpoint_every" not in s]
    processes = launch_two_processes(workdir, tiny_data_dir, compile_cache,
                                     [*steps, "--config.total_steps=2000",
                                      "--config.checkpoint_every_steps=1000"])
    log0 = []
    try:
        for line in processes[0].stderr:  # process 0 logs every step
            log0.append(line)
            if "step 2/2000" in line:
                # The same job launched again on the live workdir: refused on both hosts.
                second = launch_two_processes(workdir, tiny_data_dir, compile_cache,
                                              [*steps, "--config.total_steps=2000"])
                for i, p in enumerate(second):
                    _, err = p.communicate(timeout=300)
                    assert p.returncode != 0 and "is in use by a live run" in err, (i, err)
                for p in processes:
                    p.send_signal(signal.SIGTERM)
                break
        logs = ["".join(log0) + processes[0].communicate(timeout=300)[1],
                processes[1].communicate(timeout=300)[1]]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for i, (p, log) in enumerate(zip(processes, logs)):
        assert p.returncode == 0, f"process {i}:\n{log[-3000:]}"
    saved = checkpoints.training_manager(workdir, read_only=True).all_steps()
    assert len(saved) == 1 and 2 <= saved[0] < 2000, saved
    assert f"SIGTERM: saved step {saved[0]}" in logs[0]
    assert (workdir / "checkpoints" / str(saved[0]) / "input" / "process_1").is_dir()
