"""The trainer in process on the tiny generated dataset: every architecture trains
and evaluates, a non-finite loss stops training keeping the good checkpoint, init_from
named weights. A file of its own so that pytest-xdist can give it to one worker while
test_train.py's command-line runs go to the other.
"""
import json

import jax
import numpy as np
import pytest

from conftest import skip_or_fail
from i3d_jax import checkpoints
from test_train import tiny_config


# --------------------------------------------------------------------------
# Every architecture through the trainer (two-stream ones with their own frames),
# in process on one device: the command line and the mesh are the same code for
# every architecture and are tested above and in test_train_step.py; compiling
# each model once is this section's cost.

ARCHITECTURE_OVERRIDES = {
    "convnet_lstm": {"input.rgb.num_frames": 4, "loss.endpoints": "LogitsPerTime"},
    "conv3d": {},
    # Evaluated on whole videos: back-to-back clips keep 10 flow frames per RGB frame.
    "two_stream": {"input.streams": "rgb,flow", "input.rgb.num_frames": 1,
                   "input.rgb.offset": 5, "input.flow.num_frames": 10,
                   "eval.whole_video_frames": 20},
    "two_stream_fused": {"input.streams": "rgb,flow", "input.rgb.num_frames": 2,
                         "input.rgb.stride": 10, "input.rgb.offset": 5,
                         "input.flow.num_frames": 20, "eval.whole_video_frames": 20},
    "two_stream_i3d": {"input.streams": "rgb,flow", "loss.endpoints": "rgb_logits,flow_logits"},
}


def on_first_devices(monkeypatch, num_devices: int) -> None:
    """The trainer's mesh over the first `num_devices` of this process's 8."""
    from i3d_jax import sharding

    real_mesh = sharding.make_mesh
    monkeypatch.setattr(sharding, "make_mesh", lambda data=-1, fsdp=1, devices=None: real_mesh(
        data, fsdp, jax.devices()[:num_devices] if devices is None else devices))


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURE_OVERRIDES))
def test_every_architecture_trains_and_evaluates(architecture, tiny_data_dir, tmp_path,
                                                 monkeypatch):
    from i3d_jax.train import loop as train  # the loop's own names are patched

    on_first_devices(monkeypatch, 1)
    config = tiny_config(tiny_data_dir, **{"total_steps": 2, "model.architecture": architecture,
                                           **ARCHITECTURE_OVERRIDES[architecture]})
    final = train.train_and_evaluate(config, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in rows if r["kind"] == "train")
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [(r["step"], r["num_examples"]) for r in evals] == [(2, 16)]
    assert final["num_examples"] == 16 and final["top1"] == evals[0]["top1"]
    metadata = checkpoints.training_metadata(
        checkpoints.training_manager(tmp_path, read_only=True), 2)
    assert metadata.architecture == architecture


# --------------------------------------------------------------------------
# The non-finite stop and init_from named weights


def test_a_nan_stops_training_naming_the_step_and_keeps_the_good_checkpoint(
        tiny_data_dir, tmp_path, monkeypatch):
    from i3d_jax.train import loop as train  # the loop's own names are patched

    real_iterator = train._train_iterator

    class Poisoned:
        """The real batches as floats, with a NaN in the 3rd."""

        def __init__(self, run):
            self.inner, self.count = real_iterator(run), 0

        def __next__(self):
            batch = next(self.inner)
            self.count += 1
            # uint8 holds no NaN: these batches are float clips in [-1, 1] (the float
            # path the steps also take).
            batch["rgb"] = batch["rgb"].astype(np.float32) * (2 / 255) - 1
            if self.count == 3:
                batch["rgb"][0, 0, 0, 0, 0] = np.nan
            return batch

        def save(self, prefix):
            return self.inner.save(prefix)

    monkeypatch.setattr(train, "_train_iterator", Poisoned)
    config = tiny_config(tiny_data_dir, **{"model.architecture": "conv3d", "total_steps": 6,
                                           "checkpoint_every_steps": 2})
    with pytest.raises(FloatingPointError, match="at step 3"):
        train.train_and_evaluate(config, tmp_path)
    manager = checkpoints.training_manager(tmp_path, read_only=True)
    assert manager.all_steps() == [2]
    _, variables, _ = checkpoints.load_training_variables(tmp_path)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(variables))


def test_init_from_pretrained_rgb_weights_into_ten_classes():
    """Every trunk array of kinetics400-rgb is loaded; the 400-class classifier is
    replaced by the target's own 10-class one; another architecture is refused."""
    from i3d_jax.convert.common import CheckpointMismatchError
    from i3d_jax.models import build_model
    from i3d_jax.models.stats import abstract_variables
    from i3d_jax.weights import load_weights

    try:
        _, pretrained = load_weights("kinetics400-rgb")
    except RuntimeError as e:  # weights.py's offline message
        skip_or_fail(f"kinetics400-rgb weights unavailable offline: {e}")
    clip = jax.ShapeDtypeStruct((1, 8, 224, 224, 3), np.float32)
    target = {k: v for k, v in abstract_variables(build_model("i3d", num_classes=10), clip).items()
              if k in ("params", "batch_stats")}
    fresh = jax.tree.map(lambda s: np.full(s.shape, 7.0, s.dtype), target)
    merged = checkpoints.merge_init_variables(pretrained, fresh, "kinetics400-rgb")
    for path, value in jax.tree_util.tree_leaves_with_path(merged):
        keys = [k.key for k in path]
        source = pretrained
        for k in keys:
            source = source[k]
        if "Logits" in keys:
            assert np.all(value == 7.0) and value.shape != source.shape, keys
        else:
            np.testing.assert_array_equal(value, source, err_msg=str(keys))

    other = {k: v for k, v in abstract_variables(
        build_model("two_stream_i3d", num_classes=10),
        {"rgb": clip, "flow": jax.ShapeDtypeStruct((1, 8, 224, 224, 2), np.float32)}).items()
        if k in ("params", "batch_stats")}
    with pytest.raises(CheckpointMismatchError, match=r"missing keys .*rgb/Conv3d_1a_7x7"):
        checkpoints.merge_init_variables(pretrained, other, "kinetics400-rgb")
