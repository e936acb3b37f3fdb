"""`i3d-jax export`: StableHLO, a TF SavedModel with TF-Hub's signature, and
pytorch-i3d's state_dict, each loaded back the way its users load it and run
against `model.apply`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import require_test_package
from i3d_jax.checkpoints import ModelMetadata, save_pretrained
from i3d_jax.cli import main
from i3d_jax.kernels import XLA

REPO = Path(__file__).resolve().parents[1]


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    captured = capsys.readouterr()
    return done.value.code, captured.out, captured.err


def _checkpoint(path, architecture, inputs, **fields):
    """A random-weight model of `architecture` saved as a checkpoint: (dir, variables, model)."""
    metadata = ModelMetadata(architecture=architecture, **fields)
    model = metadata.build_model(kernels=XLA)
    variables = jax.jit(lambda key: model.init(key, inputs, train=False))(jax.random.PRNGKey(0))
    # Off their initial values: zero offsets and unit statistics would hide a mix-up.
    variables = jax.tree.map(lambda v: v + 0.05 * jax.random.normal(jax.random.PRNGKey(1), v.shape),
                             dict(variables))
    save_pretrained(path, variables, metadata)
    return path, variables, model


def _relative(ours, theirs) -> float:
    return float(np.abs(np.asarray(ours) - np.asarray(theirs)).max() / np.abs(theirs).max())


@pytest.fixture(scope="module")
def tiny_i3d(tmp_path_factory):
    rgb = np.zeros((1, 9, 224, 224, 3), np.float32)
    return _checkpoint(tmp_path_factory.mktemp("i3d") / "ckpt", "i3d", rgb, num_classes=7,
                       width_multiplier=0.125, labels=[f"c{i}" for i in range(7)])


def test_stablehlo_runs_at_any_batch_and_clip_length(tiny_i3d, tmp_path, capsys):
    path, variables, model = tiny_i3d
    out = tmp_path / "i3d.stablehlo"
    code, stdout, err = run_cli(["export", "--checkpoint", str(path), "--format", "stablehlo",
                                 "--out", str(out), "--endpoint", "AvgPool"], capsys)
    assert code == 0, err
    description = json.loads((tmp_path / "i3d.stablehlo.json").read_text())
    assert description["inputs"] == {"rgb": {"shape": ["b", "t", 224, 224, 3],
                                             "dtype": "float32", "range": [-1.0, 1.0]}}
    assert description["constraints"] == ["t >= 9"]
    assert description["labels"][:2] == ["c0", "c1"] and description["num_classes"] == 7
    assert json.loads(stdout)["params_sha256"] == description["params_sha256"]
    exported = jax.export.deserialize(bytearray(out.read_bytes()))
    assert set(exported.platforms) == {"cpu", "cuda", "tpu"}
    apply = jax.jit(lambda x: model.apply(variables, x, train=False, return_endpoints=True))
    for batch, frames in ((1, 9), (2, 12)):
        clip = np.random.default_rng(frames).uniform(-1, 1, (batch, frames, 224, 224, 3))
        clip = clip.astype(np.float32)
        got = exported.call(clip)
        logits, endpoints = apply(clip)
        assert _relative(got["logits"], logits) < 1e-5
        assert _relative(got["AvgPool"], endpoints["AvgPool"]) < 1e-5


def test_stablehlo_takes_a_two_stream_model_s_inputs(tmp_path, capsys):
    inputs = {"rgb": np.zeros((1, 1, 224, 224, 3), np.float32),
              "flow": np.zeros((1, 10, 224, 224, 2), np.float32)}
    path, variables, model = _checkpoint(tmp_path / "ckpt", "two_stream", inputs, stream="rgb+flow",
                                         in_channels=5, num_classes=4, width_multiplier=0.0625)
    code, _, err = run_cli(["export", "--checkpoint", str(path), "--format", "stablehlo",
                            "--out", str(tmp_path / "ts.bin")], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "ts.bin.json").read_text())["inputs"]["flow"]["shape"] == \
        ["b", "10*t", 224, 224, 2]
    exported = jax.export.deserialize(bytearray((tmp_path / "ts.bin").read_bytes()))
    rng = np.random.default_rng(0)
    # Two RGB frames, twenty flow frames: not the shapes it was exported with.
    clips = {"rgb": rng.uniform(-1, 1, (1, 2, 224, 224, 3)).astype(np.float32),
             "flow": rng.uniform(-1, 1, (1, 20, 224, 224, 2)).astype(np.float32)}
    want = model.apply(variables, clips, train=False)
    assert _relative(exported.call(clips)["logits"], want) < 1e-5


def test_savedmodel_has_tf_hub_s_signature_in_a_fresh_process(tmp_path, capsys, cricket_rgb_u8):
    require_test_package("tensorflow", "the SavedModel test")
    from i3d_jax.inference import LoadedModel

    pretrained = LoadedModel.from_options("kinetics400-rgb")
    out = tmp_path / "i3d_savedmodel"
    code, _, err = run_cli(["export", "--format", "savedmodel", "--out", str(out)], capsys)
    assert code == 0, err
    clip = (cricket_rgb_u8 / 255.0 * 2 - 1).astype(np.float32)
    np.save(tmp_path / "clips.npy", clip[:24])
    script = (
        "import json, sys, numpy as np, tensorflow as tf\n"
        f"model = tf.saved_model.load({str(out)!r})\n"
        "serve = model.signatures['serving_default']\n"
        "clip = np.load(sys.argv[1])\n"
        "out = {n: serve(input_frames=tf.constant(clip[None, :n]))['logits'].numpy().tolist()\n"
        "       for n in (16, 24)}\n"
        "print(json.dumps({'inputs': sorted(serve.structured_input_signature[1]),\n"
        "                  'outputs': sorted(serve.structured_outputs), 'logits': out}))\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "clips.npy")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["inputs"] == ["input_frames"] and result["outputs"] == ["logits"]
    model = pretrained.metadata.build_model(kernels=XLA)
    for frames, logits in result["logits"].items():
        ours = model.apply(pretrained.variables, clip[None, :int(frames)], train=False)
        assert np.asarray(logits).shape == (1, 400)
        assert _relative(logits, ours) < 1e-5, frames
    assert pretrained.metadata.labels[int(np.argmax(result["logits"]["24"]))] == "playing cricket"


def test_pytorch_i3d_state_dict_round_trips_and_loads_strictly(tmp_path, capsys, reference_dir):
    torch = require_test_package("torch", "the pytorch-i3d export test")
    if str(REPO) not in sys.path:  # `benchmarks` is a top-level folder, not in the package
        sys.path.insert(0, str(REPO))
    from benchmarks.torch_i3d import InceptionI3d as TorchI3d
    from i3d_jax.checkpoints import load_pretrained
    from i3d_jax.inference import LoadedModel

    # DeepMind's weights: pytorch-i3d's shapes, and no BatchNorm scale, so gamma must
    # come out as ones.
    pretrained = LoadedModel.from_options("kinetics400-rgb")
    variables = pretrained.variables
    model = pretrained.metadata.build_model(kernels=XLA)
    out = tmp_path / "i3d.pt"
    code, _, err = run_cli(["export", "--weights", "kinetics400-rgb", "--format", "pytorch-i3d",
                            "--out", str(out)], capsys)
    assert code == 0, err
    state = torch.load(out, weights_only=True)
    manifest = json.loads((reference_dir / "pytorch_i3d_rgb_manifest.json").read_text())
    assert {k: list(v.shape) for k, v in state.items()} == {k: s for k, s in manifest}
    assert torch.equal(state["Mixed_4c.b1b.bn.weight"], torch.ones(224))
    assert state["Conv3d_1a_7x7.bn.num_batches_tracked"].dtype == torch.int64

    # Back through `convert --from pytorch-i3d`: bitwise ours (the scale of ones folded away).
    code, _, err = run_cli(["convert", "--from", "pytorch-i3d", str(out), "--out",
                            str(tmp_path / "back"), "--fold-batch-norm-scale"], capsys)
    assert code == 0, err
    _, back = load_pretrained(tmp_path / "back")
    for (key, a), b in zip(jax.tree_util.tree_leaves_with_path(back),
                           jax.tree.leaves(jax.tree.map(np.asarray, variables))):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(key))

    peer = TorchI3d().eval()
    peer.load_state_dict(state, strict=True)
    clip = np.random.default_rng(0).uniform(-1, 1, (1, 16, 112, 112, 3)).astype(np.float32)
    with torch.no_grad():
        per_time, _ = peer(torch.from_numpy(np.moveaxis(clip, -1, 1).copy()))
        theirs = per_time.mean(-1).numpy()  # pytorch-i3d's clip logits
    ours = np.asarray(model.apply(variables, clip, train=False))
    assert _relative(ours, theirs) < 1e-4


def test_the_npz_state_dict_holds_the_same_names(tiny_i3d, tmp_path, capsys):
    # A model of another width is still I3D: its names are pytorch-i3d's.
    path, _, _ = tiny_i3d
    code, _, err = run_cli(["export", "--checkpoint", str(path), "--format", "pytorch-i3d",
                            "--out", str(tmp_path / "sd.npz")], capsys)
    assert code == 0, err
    with np.load(tmp_path / "sd.npz") as saved:
        assert "Mixed_5c.b3b.bn.num_batches_tracked" in saved.files
        assert saved["logits.conv3d.weight"].shape == (7, 128, 1, 1, 1)


def test_other_architectures_to_pytorch_i3d_are_refused_naming_the_formats(tmp_path, capsys):
    inputs = np.zeros((2, 16, 112, 112, 3), np.float32)
    path, _, _ = _checkpoint(tmp_path / "ckpt", "conv3d", inputs, num_classes=3,
                             width_multiplier=0.0625)
    code, _, err = run_cli(["export", "--checkpoint", str(path), "--format", "pytorch-i3d",
                            "--out", str(tmp_path / "c3d.pt")], capsys)
    assert code == 2 and err.count("\n") == 2  # the progress line, then one error line
    assert "holds 'conv3d': export it with --format stablehlo" in err
    assert not list(tmp_path.glob("*c3d*"))


def test_a_bad_out_is_one_line_and_leaves_nothing(tiny_i3d, tmp_path, capsys):
    path, _, _ = tiny_i3d
    existing = tmp_path / "taken.stablehlo"
    existing.write_bytes(b"keep me")
    code, _, err = run_cli(["export", "--checkpoint", str(path), "--format", "stablehlo",
                            "--out", str(existing)], capsys)
    assert code == 2 and err.endswith(f"{existing} already exists; choose another --out or "
                                      "pass --overwrite\n")
    assert existing.read_bytes() == b"keep me"
    missing = tmp_path / "no" / "such" / "dir" / "x.npz"
    code, _, err = run_cli(["export", "--checkpoint", str(path), "--format", "pytorch-i3d",
                            "--out", str(missing)], capsys)
    assert code == 2 and f"the folder {missing.parent} does not exist" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.stablehlo"]
