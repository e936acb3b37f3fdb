"""torchvision's ImageNet `googlenet` state_dict (BatchNorm with gamma; the
auxiliary heads `aux1`/`aux2` are dropped).

Only parameters are converted: torchvision's max-pools use `ceil_mode` and
its first conv pads 3 on each side, where our model keeps TF SAME padding,
so outputs differ slightly from torchvision's own. torchvision's pretrained
model maps its ImageNet-normalised input back to [-1, 1] before the first
conv (`transform_input`), so these weights take [-1, 1] input, as ours do.
"""

from __future__ import annotations

import numpy as np

from i3d_jax.convert.common import gather_units
from i3d_jax.convert.inception_v1 import inception_v1_units

_STEM = {"Conv2d_1a_7x7": "conv1", "Conv2d_2b_1x1": "conv2", "Conv2d_2c_3x3": "conv3"}
_BLOCKS = {
    "Mixed_3b": "inception3a",
    "Mixed_3c": "inception3b",
    "Mixed_4b": "inception4a",
    "Mixed_4c": "inception4b",
    "Mixed_4d": "inception4c",
    "Mixed_4e": "inception4d",
    "Mixed_4f": "inception4e",
    "Mixed_5b": "inception5a",
    "Mixed_5c": "inception5b",
}
# torchvision numbers its branches 1-4 and, inside a Sequential, its layers
# (branch4.0 is the max-pool, which has no parameters).
_BRANCHES = {
    "Branch_0_Conv2d_0a_1x1": "branch1",
    "Branch_1_Conv2d_0a_1x1": "branch2.0",
    "Branch_1_Conv2d_0b_3x3": "branch2.1",
    "Branch_2_Conv2d_0a_1x1": "branch3.0",
    "Branch_2_Conv2d_0b_3x3": "branch3.1",
    "Branch_3_Conv2d_0b_1x1": "branch4.1",
}
_LEAF = {
    "kernel": "conv.weight",
    "beta": "bn.bias",
    "gamma": "bn.weight",
    "mean": "bn.running_mean",
    "var": "bn.running_var",
}


def torchvision_name(unit: tuple[str, ...], leaf: str) -> str:
    if unit == ("Logits",):
        return {"kernel": "fc.weight", "bias": "fc.bias"}[leaf]
    prefix = _STEM[unit[0]] if len(unit) == 1 else f"{_BLOCKS[unit[0]]}.{_BRANCHES[unit[1]]}"
    return f"{prefix}.{_LEAF[leaf]}"


def _transform(leaf: str, a: np.ndarray) -> np.ndarray:
    if leaf != "kernel":
        return a.reshape(-1)
    if a.ndim == 2:  # fc [out, in] -> 1x1 conv [1, 1, in, out]
        return a.T[None, None]
    return np.transpose(a, (2, 3, 1, 0))  # [out, in, h, w] -> [h, w, in, out]


def _ignorable(name: str) -> bool:
    return name.startswith(("aux1.", "aux2.")) or name.endswith("num_batches_tracked")


def convert_torchvision_googlenet(state: dict[str, np.ndarray], origin: str = "state_dict"):
    """{params, batch_stats} of our InceptionV1 (with BatchNorm scale)."""
    return gather_units(
        state,
        torchvision_name,
        _transform,
        _ignorable,
        origin,
        units=inception_v1_units(),
        conv="conv_2d",
    )
