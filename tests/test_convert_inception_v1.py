"""ImageNet Inception-v1 checkpoints (TF-slim, torchvision) into our 2D
model, `i3d-jax convert` for them, and `i3d-jax inflate` end to end.

Values are the reference folder's seeded weights in each source's layout
(names and shapes of the real files)."""

import json

import numpy as np
import pytest
from flax import traverse_util

from i3d_jax import cli
from i3d_jax.checkpoints import load_pretrained
from i3d_jax.convert.common import CheckpointMismatchError, check_fits
from i3d_jax.convert import convert_inception_v1_checkpoint
from i3d_jax.convert.inception_v1 import check_inception_v1, expected_inception_v1_variables
from i3d_jax.convert.tf_slim import convert_tf_slim
from i3d_jax.convert.torchvision_googlenet import convert_torchvision_googlenet
from i3d_jax.models import InceptionV1
from tf_checkpoint import write_tf_checkpoint


@pytest.fixture(scope="module")
def slim_arrays(reference_dir, seeded_weights):
    with open(reference_dir / "tf_slim_inception_v1_manifest.json") as f:
        return seeded_weights(json.load(f), layout="tf")


@pytest.fixture(scope="module")
def torchvision_arrays(reference_dir, seeded_weights):
    with open(reference_dir / "torchvision_googlenet_manifest.json") as f:
        return seeded_weights(json.load(f), layout="torch")


def _leaves_by_value(variables):
    """{array bytes: path} of every leaf (seeded arrays are all distinct)."""
    flat = traverse_util.flatten_dict(variables)
    return {np.ascontiguousarray(v, np.float32).tobytes(): "/".join(k) for k, v in flat.items()}


def test_every_tf_slim_variable_is_converted(slim_arrays):
    variables = convert_tf_slim(slim_arrays, origin="slim")
    check_fits(variables, expected_inception_v1_variables(InceptionV1(), 3), "slim")
    leaves = _leaves_by_value(variables)
    expected = dict(slim_arrays)
    # Class 0 of slim's 1001 is "background": the 1000 ImageNet classes remain.
    expected["InceptionV1/Logits/Conv2d_0c_1x1/weights"] = slim_arrays[
        "InceptionV1/Logits/Conv2d_0c_1x1/weights"
    ][..., 1:]
    expected["InceptionV1/Logits/Conv2d_0c_1x1/biases"] = slim_arrays[
        "InceptionV1/Logits/Conv2d_0c_1x1/biases"
    ][1:]
    lost = [name for name, a in expected.items() if np.ascontiguousarray(a).tobytes() not in leaves]
    assert not lost
    assert len(leaves) == len(expected)
    # Where the unusual names land.
    found = {name: leaves[np.ascontiguousarray(a).tobytes()] for name, a in expected.items()}
    assert (
        found["InceptionV1/Mixed_5b/Branch_2/Conv2d_0a_3x3/weights"]
        == "params/Mixed_5b/Branch_2_Conv2d_0b_3x3/conv_2d/kernel"
    )
    assert (
        found["InceptionV1/Mixed_4e/Branch_3/Conv2d_0b_1x1/BatchNorm/moving_variance"]
        == "batch_stats/Mixed_4e/Branch_3_Conv2d_0b_1x1/batch_norm/var"
    )
    assert found["InceptionV1/Logits/Conv2d_0c_1x1/biases"] == "params/Logits/conv_2d/bias"


def test_every_torchvision_parameter_is_converted(torchvision_arrays):
    variables = convert_torchvision_googlenet(torchvision_arrays, origin="googlenet")
    check_fits(
        variables,
        expected_inception_v1_variables(InceptionV1(batch_norm_scale=True), 3),
        "googlenet",
    )
    leaves = _leaves_by_value(variables)
    expected = {}
    for name, a in torchvision_arrays.items():
        if name.startswith(("aux1.", "aux2.")) or name.endswith("num_batches_tracked"):
            continue  # auxiliary heads and counters are not the network
        if a.ndim == 4:  # [out, in, h, w] -> [h, w, in, out]
            a = a.transpose(2, 3, 1, 0)
        elif a.ndim == 2:  # fc [out, in] -> a 1x1 conv
            a = a.T[None, None]
        expected[name] = a
    lost = [name for name, a in expected.items() if np.ascontiguousarray(a).tobytes() not in leaves]
    assert not lost
    assert len(leaves) == len(expected)
    found = {name: leaves[np.ascontiguousarray(a).tobytes()] for name, a in expected.items()}
    # BatchNorm gamma is kept as a scale; torchvision's branch numbering.
    assert found["conv1.bn.weight"] == "params/Conv2d_1a_7x7/batch_norm/scale"
    assert (
        found["inception4a.branch4.1.conv.weight"]
        == "params/Mixed_4b/Branch_3_Conv2d_0b_1x1/conv_2d/kernel"
    )
    assert (
        found["inception5b.branch3.1.bn.running_mean"]
        == "batch_stats/Mixed_5c/Branch_2_Conv2d_0b_3x3/batch_norm/mean"
    )
    assert found["fc.weight"] == "params/Logits/conv_2d/kernel"


@pytest.mark.parametrize("source", ["slim", "torchvision"])
def test_missing_and_extra_names_are_reported(source, slim_arrays, torchvision_arrays):
    if source == "slim":
        arrays, convert = dict(slim_arrays), convert_tf_slim
        gone = "InceptionV1/Mixed_4c/Branch_1/Conv2d_0b_3x3/BatchNorm/moving_mean"
        extra = "InceptionV1/Mixed_6a/Branch_0/Conv2d_0a_1x1/weights"
    else:
        arrays, convert = dict(torchvision_arrays), convert_torchvision_googlenet
        gone = "inception3b.branch3.1.bn.running_var"
        extra = "inception6a.branch1.conv.weight"
    del arrays[gone]
    arrays[extra] = np.zeros((1, 1, 8, 8), np.float32)
    with pytest.raises(CheckpointMismatchError) as error:
        convert(arrays, origin="ckpt")
    assert error.value.missing == [gone]
    assert error.value.unexpected == [extra]
    assert gone in str(error.value) and extra in str(error.value)


def test_mis_shaped_array_is_reported(torchvision_arrays, tmp_path):
    arrays = dict(torchvision_arrays)
    arrays["conv2.conv.weight"] = arrays["conv2.conv.weight"][:, :32]
    np.savez(tmp_path / "googlenet.npz", **arrays)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"mis-shaped params/Conv2d_2b_1x1/conv_2d/kernel: "
        r"checkpoint has \(1, 1, 32, 64\), model expects \(1, 1, 64, 64\)",
    ):
        convert_inception_v1_checkpoint("torchvision", str(tmp_path / "googlenet.npz"))


def _run(argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    return exit_info.value.code


def test_convert_and_inflate_commands(slim_arrays, torchvision_arrays, tmp_path):
    import torch

    # torchvision's .pth, read with weights_only=True.
    torch.save(
        {k: torch.from_numpy(v) for k, v in torchvision_arrays.items()}, tmp_path / "googlenet.pth"
    )
    assert (
        _run(
            [
                "convert",
                "--from",
                "torchvision",
                str(tmp_path / "googlenet.pth"),
                "--out",
                str(tmp_path / "googlenet"),
            ]
        )
        == 0
    )
    meta, googlenet = load_pretrained(tmp_path / "googlenet")
    assert (meta.architecture, meta.num_classes, meta.batch_norm_scale) == (
        "inception_v1",
        1000,
        True,
    )

    # TF-slim's checkpoint as a TF checkpoint prefix.
    write_tf_checkpoint(tmp_path / "inception_v1.ckpt", slim_arrays)
    assert (
        _run(
            [
                "convert",
                "--from",
                "tf-slim",
                str(tmp_path / "inception_v1.ckpt"),
                "--out",
                str(tmp_path / "slim"),
            ]
        )
        == 0
    )
    meta, slim = load_pretrained(tmp_path / "slim")
    assert (meta.architecture, meta.num_classes, meta.batch_norm_scale) == (
        "inception_v1",
        1000,
        False,
    )

    # A flow I3D for Kinetics from our converted googlenet: gamma folded into
    # the kernels (I3D has none), 2 input channels, a new 400-way classifier.
    assert (
        _run(
            [
                "inflate",
                "--from",
                "flax",
                str(tmp_path / "googlenet"),
                "--out",
                str(tmp_path / "flow"),
                "--stream",
                "flow",
                "--num-classes",
                "400",
            ]
        )
        == 0
    )
    meta, flow = load_pretrained(tmp_path / "flow")
    assert (
        meta.architecture,
        meta.stream,
        meta.in_channels,
        meta.num_classes,
        meta.batch_norm_scale,
    ) == ("i3d", "flow", 2, 400, False)
    kernel = flow["params"]["Conv3d_2c_3x3"]["conv_3d"]["kernel"]
    gamma = torchvision_arrays["conv3.bn.weight"]
    np.testing.assert_allclose(
        kernel.sum(axis=0),
        googlenet["params"]["Conv2d_2c_3x3"]["conv_2d"]["kernel"] * gamma,
        rtol=1e-5,
        atol=1e-7,
    )
    np.testing.assert_allclose(
        flow["batch_stats"]["Conv3d_2c_3x3"]["batch_norm"]["mean"],
        torchvision_arrays["conv3.bn.running_mean"] * gamma,
        rtol=1e-6,
    )
    assert flow["params"]["Conv3d_1a_7x7"]["conv_3d"]["kernel"].shape == (7, 7, 7, 2, 64)
    assert flow["params"]["Logits"]["conv_3d"]["kernel"].shape == (1, 1, 1, 1024, 400)

    # Straight from slim's file, keeping its 1000 classes: the classifier is inflated too.
    np.savez(tmp_path / "slim.npz", **slim_arrays)
    assert (
        _run(
            [
                "inflate",
                "--from",
                "tf-slim",
                str(tmp_path / "slim.npz"),
                "--out",
                str(tmp_path / "rgb"),
            ]
        )
        == 0
    )
    meta, rgb = load_pretrained(tmp_path / "rgb")
    assert (meta.stream, meta.num_classes) == ("rgb", 1000)
    np.testing.assert_allclose(
        rgb["params"]["Logits"]["conv_3d"]["kernel"][0],
        slim["params"]["Logits"]["conv_2d"]["kernel"],
    )

    # Inflating something that is not a 2D Inception-v1 says so.
    assert (
        _run(["inflate", "--from", "flax", str(tmp_path / "rgb"), "--out", str(tmp_path / "again")])
        == 2
    )
    assert not (tmp_path / "again").exists()


def test_first_conv_channels_give_the_stream_and_others_are_refused(slim_arrays):
    """2-channel (flow) weights are accepted as flow; any other count is an
    error that names the accepted ones (it once said "expected 3")."""
    variables = convert_tf_slim(slim_arrays, origin="slim")
    first = variables["params"]["Conv2d_1a_7x7"]["conv_2d"]

    def with_channels(n):
        kernel = np.resize(first["kernel"], first["kernel"].shape[:2] + (n, first["kernel"].shape[3]))
        params = {**variables["params"], "Conv2d_1a_7x7": {**variables["params"]["Conv2d_1a_7x7"],
                                                           "conv_2d": {"kernel": kernel}}}
        return {**variables, "params": params}

    fields, stream = check_inception_v1(with_channels(2), "flow.ckpt")
    assert (stream, fields["in_channels"]) == ("flow", 2)
    assert check_inception_v1(variables, "rgb.ckpt")[1] == "rgb"
    with pytest.raises(ValueError, match=r"four.ckpt \(first conv\): 4 input channels; "
                                         r"expected 3 \(rgb\) or 2 \(flow\)"):
        check_inception_v1(with_channels(4), "four.ckpt")
    with pytest.raises(ValueError, match="--stream rgb, but its first conv takes flow input"):
        check_inception_v1(with_channels(2), "flow.ckpt", stream="rgb")
