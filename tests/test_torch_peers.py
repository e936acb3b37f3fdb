"""The benchmark's PyTorch networks (`benchmarks/torch_models.py`) compute our
architectures' function: given our weights (perturbed, BatchNorm statistics
included) they give our logits, so `benchmarks.run` times the same network
in both frameworks."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the benchmark's PyTorch peers need torch")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `benchmarks` is a top-level folder, not in the package
    sys.path.insert(0, str(REPO))

from benchmarks import run, torch_models  # noqa: E402

WIDTH = 1 / 16
SHAPES = {
    "convnet_lstm": {"rgb": (2, 2, 32, 32, 3)},
    "conv3d": {"rgb": (2, 16, 64, 64, 3)},
    "two_stream": {"rgb": (2, 1, 32, 32, 3), "flow": (2, 10, 32, 32, 2)},
    "two_stream_fused": {"rgb": (2, 2, 64, 64, 3), "flow": (2, 20, 64, 64, 2)},
    "two_stream_i3d": {"rgb": (1, 4, 32, 32, 3), "flow": (1, 4, 32, 32, 2)},
}


_REFERENCES = {}


def reference(arch):
    """(variables, inputs, our logits), computed once per architecture (a copy of
    the variables: tests change them)."""
    if arch not in _REFERENCES:
        _REFERENCES[arch] = run.reference_logits(arch, SHAPES[arch], WIDTH)
    variables, arrays, logits = _REFERENCES[arch]
    return jax_copy(variables), arrays, logits


def jax_copy(tree):  # nested dicts of arrays, copied
    return {k: jax_copy(v) if isinstance(v, dict) else np.array(v) for k, v in tree.items()}


# I3D is checked through Two-Stream I3D: its RGB and its flow network (the
# benchmark's "i3d" is the first alone), one compile fewer in the suite.
@pytest.mark.parametrize("arch", sorted(SHAPES))
def test_the_pytorch_network_gives_our_logits(arch):
    shapes = SHAPES[arch]
    variables, arrays, ours = reference(arch)
    theirs = run.peer_logits(arch, shapes, variables, arrays, WIDTH)
    scale = np.abs(ours).max()
    np.testing.assert_allclose(theirs, ours, atol=1e-4 * scale, rtol=1e-4)
    # The logits depend on the clip (not only on the classifier's bias).
    assert np.abs(ours - ours[::-1]).max() > 1e-2 * scale or ours.shape[0] == 1


def test_in_bfloat16_both_compute_the_same_network_to_its_rounding():
    # The benchmark's bfloat16 rows: ours with the models' dtype, PyTorch under
    # autocast. Each must really round (differ from float32) and the two
    # agree to bfloat16's rounding (0.5% of the logits' scale here).
    arch = "two_stream_i3d"
    variables, arrays, ours = run.reference_logits(arch, SHAPES[arch], WIDTH,
                                                   ("float32", "bfloat16"))
    theirs = run.peer_logits(arch, SHAPES[arch], jax_copy(variables), arrays, WIDTH, "bfloat16")
    scale = np.abs(ours["float32"]).max()
    assert np.abs(ours["bfloat16"] - ours["float32"]).max() > 1e-4 * scale
    assert np.abs(theirs - ours["float32"]).max() > 1e-4 * scale
    np.testing.assert_allclose(theirs, ours["bfloat16"], atol=3e-2 * scale)


@pytest.mark.parametrize("requested,flags,dtypes,warned", [
    ("auto", {"avx2"}, ["float32"], False),
    ("auto", {"avx512f", "avx512_bf16"}, ["float32", "bfloat16"], False),
    ("bfloat16", {"avx2"}, ["bfloat16"], True),          # measured as asked, not silently
    ("float32,bfloat16", {"amx_bf16"}, ["float32", "bfloat16"], False),
])
def test_the_benchmark_measures_bfloat16_where_the_cpu_has_it(requested, flags, dtypes, warned):
    chosen, warning = run.dtypes_for(requested, frozenset(flags))
    assert chosen == dtypes
    assert (warning is not None) == warned


def test_the_benchmark_names_an_unknown_dtype():
    with pytest.raises(ValueError, match=r"--dtypes: \['float16'\] not in"):
        run.dtypes_for("float32,float16", frozenset())


def test_the_table_gives_each_framework_its_speed_ratio_compile_time_and_memory():
    row = {"arch": "two_stream", "input": "rgb 1x224x224 + flow 10x224x224", "batch": 1,
           "dtype": "float32",
           "jax": {"train": {"clips_per_s": 5.0, "compile_s": 29.4, "gflop_per_clip": 19.7,
                             "percent_of_peak": 30.2}, "peak_rss_mb": 1769.4},
           "torch_eager": {"train": {"clips_per_s": 4.0, "compile_s": 2.0},
                           "peak_rss_mb": 708.0},
           "torch_compile": {"train": {"clips_per_s": 2.5, "compile_s": 181.6},
                             "peak_rss_mb": 950.2}}
    header, rule, line = run.markdown([row], ["train"]).splitlines()
    cells = dict(zip([c.strip() for c in header.strip("|").split("|")],
                     [c.strip() for c in line.strip("|").split("|")]))
    assert len(rule.strip("|").split("|")) == len(cells)
    assert cells["ours clips/s"] == "5.000" and cells["torch.compile"] == "2.500"
    assert cells["ours / eager"] == "1.25x" and cells["ours / compile"] == "2.00x"
    assert cells["ours compile s"] == "29" and cells["torch.compile compile s"] == "182"
    assert (cells["ours peak MB"], cells["eager peak MB"], cells["torch.compile peak MB"]) == (
        "1769", "708", "950")
    assert cells["GFLOP/clip"] == "19.7" and cells["ours % of peak"] == "30%"
    # A peer that was not run is "n/a", not a crash.
    del row["torch_compile"]
    cells = run.markdown([row], ["train"]).splitlines()[2].strip("|").split("|")
    assert [c.strip() for c in cells].count("n/a") == 4


def test_a_wrongly_mapped_kernel_changes_the_logits():
    shapes = SHAPES["two_stream_i3d"]
    variables, arrays, ours = reference("two_stream_i3d")
    unit = variables["params"]["flow"]["Mixed_3b"]["Branch_1_Conv3d_0b_3x3"]["conv_3d"]
    unit["kernel"] = np.flip(unit["kernel"], axis=1).copy()  # a kernel read upside down
    theirs = run.peer_logits("two_stream_i3d", shapes, variables, arrays, WIDTH)
    assert np.abs(theirs - ours).max() > 1e-3 * np.abs(ours).max()


def test_a_missing_or_extra_variable_is_named():
    variables, _, _ = reference("conv3d")
    del variables["params"]["fc7"]["dense"]
    variables["params"]["fc9"] = {"kernel": np.zeros((2, 2), np.float32)}
    peer = torch_models.build("conv3d", run.NUM_CLASSES, WIDTH, clip_shape=(16, 64, 64))
    with pytest.raises(KeyError, match=r"fc7\.dense\.weight.*fc9"):
        torch_models.load_flax_variables(peer, variables)
