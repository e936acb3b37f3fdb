"""Resumes as a pod does them: a run saved on 8 devices (data=2 x fsdp=4) goes on
on 4 devices and on 1 with the losses of a run never interrupted and exactly its
batches; a checkpoint write does not hold up the steps after it, nor does a
replicated state's save compile a slice per device.

In one process with 8 fake CPU devices: a smaller topology is the trainer's mesh
over the first devices. A tiny 3D-ConvNet with BatchNorm frozen (statistics of
8 tiny clips would amplify the 1e-7 that sums over 8, 4 and 1 devices differ by,
see test_multihost.py).
"""
import shutil
import threading
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from test_multihost import train_rows
from test_train import tiny_config

INTERRUPTED_AT, TOTAL = 3, 6


def config_for(data_dir, data, fsdp, total=TOTAL):
    return tiny_config(data_dir, **{"model.architecture": "conv3d", "total_steps": total,
                                    "checkpoint_every_steps": INTERRUPTED_AT,
                                    "batch_norm": "frozen", "mesh.data": data,
                                    "mesh.fsdp": fsdp})


class RecordedLabels:
    """The trainer's input iterator, noting the labels of every batch it hands out."""

    def __init__(self, inner, record):
        self.inner, self.record = inner, record

    def __next__(self):
        batch = next(self.inner)
        self.record.append(batch["label"].copy())
        return batch

    def save(self, prefix):
        return self.inner.save(prefix)

    def restore(self, prefix):
        return self.inner.restore(prefix)


def train_recording(monkeypatch, train, config, workdir, num_devices, stop_at=None):
    """Trains on the first `num_devices` devices; the labels of each batch consumed.
    `stop_at`: a preemption notice arrives at that step (the run saves and returns)."""
    from i3d_jax import sharding

    labels = []
    real_iterator, real_mesh = train._train_iterator, sharding.make_mesh
    monkeypatch.setattr(train, "_train_iterator",
                        lambda run: RecordedLabels(real_iterator(run), labels))
    monkeypatch.setattr(sharding, "make_mesh", lambda data=-1, fsdp=1, devices=None: real_mesh(
        data, fsdp, jax.devices()[:num_devices] if devices is None else devices))
    if stop_at is not None:
        monkeypatch.setattr(train.PreemptionNotice, "reached",
                            lambda self, manager, step: step == stop_at)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train.train_and_evaluate(config, workdir)
    monkeypatch.undo()
    donation = [str(w.message) for w in caught if "donat" in str(w.message)]
    assert not donation, donation  # restored arrays were re-materialised: donatable
    return labels


@pytest.fixture(scope="module")
def runs(tiny_data_dir, tmp_path_factory):
    """The uninterrupted 8-device run and the one stopped at step 3, with their labels."""
    from i3d_jax.train import loop as train  # the loop's own names are patched

    monkeypatch = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("topology")
    straight = train_recording(monkeypatch, train, config_for(tiny_data_dir, 2, 4),
                               root / "straight", 8)
    stopped = train_recording(monkeypatch, train, config_for(tiny_data_dir, 2, 4),
                              root / "stopped", 8, stop_at=INTERRUPTED_AT)
    return root, straight, stopped


@pytest.mark.parametrize("num_devices,data,fsdp", [(4, 1, 4), (1, 1, 1)])
def test_a_run_saved_on_8_devices_resumes_on_fewer(runs, num_devices, data, fsdp, tiny_data_dir,
                                                   tmp_path, monkeypatch):
    from i3d_jax import checkpoints
    from i3d_jax.train import loop as train  # the loop's own names are patched

    root, straight_labels, stopped_labels = runs
    assert checkpoints.training_manager(root / "stopped", read_only=True).all_steps() == [3]
    assert len(stopped_labels) == INTERRUPTED_AT and len(straight_labels) == TOTAL
    workdir = tmp_path / "resumed"
    shutil.copytree(root / "stopped", workdir)

    resumed_labels = train_recording(monkeypatch, train, config_for(tiny_data_dir, data, fsdp),
                                     workdir, num_devices)
    # Exactly the batches the uninterrupted run saw, in its order.
    assert len(resumed_labels) == TOTAL - INTERRUPTED_AT
    for step, (got, want) in enumerate(zip(stopped_labels + resumed_labels, straight_labels), 1):
        np.testing.assert_array_equal(got, want, err_msg=f"labels of the batch of step {step}")
    straight, resumed = train_rows(root / "straight"), train_rows(workdir)
    assert [r["step"] for r in resumed] == list(range(1, TOTAL + 1))
    np.testing.assert_allclose([r["loss"] for r in resumed], [r["loss"] for r in straight],
                               rtol=1e-4, atol=1e-6)


class HeldWrite:
    """An Orbax future that finishes only once `release` is set (or after 120 s)."""

    def __init__(self, release: threading.Event, outcome: dict):
        self.release, self.outcome = release, outcome

    def result(self, timeout=None):
        self.outcome.setdefault("released_by_training", self.release.wait(120))

    def cancel(self):
        return False


def test_a_checkpoint_write_does_not_hold_up_the_next_steps(tiny_data_dir, tmp_path,
                                                            monkeypatch):
    """The write of step 2 cannot finish before the batch of step 4 is fetched (so
    step 3 has run and been logged): a save that blocked the loop would wait 120 s
    for it instead. The run still ends with step 2's checkpoint whole."""
    from i3d_jax import checkpoints
    from i3d_jax.train import loop as train  # the loop's own names are patched

    release, outcome = threading.Event(), {}

    real_async_save = ocp.PyTreeCheckpointHandler.async_save

    async def held_async_save(self, directory, *args, **kwargs):
        futures = await real_async_save(self, directory, *args, **kwargs) or []
        if "held" not in outcome:  # only the first save (step 2) is held
            outcome["held"] = True
            futures.append(HeldWrite(release, outcome))
        return futures

    real_iterator = train._train_iterator

    class ReleasingAtStep4:
        def __init__(self, run):
            self.inner, self.count = real_iterator(run), 0

        def __next__(self):
            self.count += 1
            if self.count == 4:
                release.set()
            return next(self.inner)

        def save(self, prefix):
            return self.inner.save(prefix)

    monkeypatch.setattr(ocp.PyTreeCheckpointHandler, "async_save", held_async_save)
    monkeypatch.setattr(train, "_train_iterator", ReleasingAtStep4)
    config = tiny_config(tiny_data_dir, **{"model.architecture": "conv3d", "total_steps": 4,
                                           "checkpoint_every_steps": 2,
                                           "eval_every_steps": 0})
    train.train_and_evaluate(config, tmp_path)
    assert outcome == {"held": True, "released_by_training": True}
    assert checkpoints.training_manager(tmp_path, read_only=True).all_steps() == [2, 4]


@pytest.mark.parametrize("min_bytes,slices", [(None, 0), (0, 8)])
def test_a_replicated_state_is_saved_without_slicing_it_on_each_device(tmp_path, monkeypatch,
                                                                       caplog, min_bytes, slices):
    """Orbax would split each replicated array among its 8 replicas, slicing it on
    every device, each slice a compile of its own (1056 for the tiny I3D's first
    save); arrays under checkpoints._REPLICA_PARALLEL_MIN_BYTES are not split
    (with no minimum: one slice per device). The state round-trips, its RBG key too."""
    from i3d_jax import checkpoints, sharding

    if min_bytes is not None:
        monkeypatch.setattr(checkpoints, "_REPLICA_PARALLEL_MIN_BYTES", min_bytes)
    replicated = jax.sharding.NamedSharding(sharding.make_mesh(8, 1),
                                            jax.sharding.PartitionSpec())
    state = {"kernel": jax.device_put(np.arange(3 * 3 * 8 * 16, dtype=np.float32)
                                      .reshape(3, 3, 8, 16), replicated),
             "rng": jax.device_put(jax.random.key(3, impl="rbg"), replicated)}
    manager = checkpoints.training_manager(tmp_path)
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        checkpoints.save_training(manager, 1, state, None, checkpoints.ModelMetadata())
        manager.wait_until_finished()
    compiled = [r for r in caplog.records if r.getMessage().startswith("Compiling jit(slice)")]
    assert len(compiled) == slices
    abstract = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), state)
    restored = checkpoints.restore_training(manager, 1, abstract,
                                            jax.tree.map(lambda _: replicated, state), None)
    np.testing.assert_array_equal(restored["kernel"], state["kernel"])
    assert restored["rng"].dtype == state["rng"].dtype
    np.testing.assert_array_equal(jax.random.key_data(restored["rng"]),
                                  jax.random.key_data(state["rng"]))
