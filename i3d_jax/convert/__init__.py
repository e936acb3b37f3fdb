"""External checkpoints -> our {params, batch_stats} and their ModelMetadata.

`convert_checkpoint(fmt, src)` reads any supported format. Each format module
is a leaf that turns that format's named arrays into our tree (sharing only
`common` and, for the 2D ones, `inception_v1`'s unit layout); this package
chooses among them and checks the result against the model it must fit.
"""
from __future__ import annotations

from pathlib import Path

from i3d_jax.arrays import load_npz
from i3d_jax.checkpoints import ModelMetadata
from i3d_jax.convert import common
from i3d_jax.convert.deepmind import convert_deepmind, read_tf_checkpoint
from i3d_jax.convert.i3d_jax_pickle import load_i3d_jax_pickle
from i3d_jax.convert.inception_v1 import check_inception_v1
from i3d_jax.convert.pytorch_i3d import convert_pytorch_i3d, read_state_dict
from i3d_jax.convert.tf_slim import convert_tf_slim
from i3d_jax.convert.torchvision_googlenet import convert_torchvision_googlenet

# I3D checkpoints, then the 2D ImageNet Inception-v1 ones (written as our 2D
# `inception_v1`, the source of `i3d-jax inflate --from flax`).
I3D_FORMATS = ("deepmind", "pytorch-i3d", "i3d-jax-pickle")
INCEPTION_V1_FORMATS = ("tf-slim", "torchvision")
CONVERT_FORMATS = I3D_FORMATS + INCEPTION_V1_FORMATS


def _unknown(fmt: str, formats) -> ValueError:
    return ValueError(f"unknown format {fmt!r}; choose one of {', '.join(formats)}")


def _metadata(architecture: str, stream: str, fmt: str, src: str, fields: dict) -> ModelMetadata:
    return ModelMetadata(architecture=architecture, stream=stream, source=f"{fmt}:{Path(src).name}", **fields)


def read_i3d(fmt: str, src: str, stream: str | None = None):
    """Our I3D variables from a checkpoint as distributed (unchecked)."""
    if fmt == "deepmind":
        return convert_deepmind(read_tf_checkpoint(src), stream, origin=src)
    if fmt == "pytorch-i3d":
        return convert_pytorch_i3d(read_state_dict(src), origin=src)
    if fmt == "i3d-jax-pickle":
        return load_i3d_jax_pickle(src)
    raise _unknown(fmt, I3D_FORMATS)


def read_inception_v1(fmt: str, src: str):
    """Our 2D variables from a checkpoint as distributed (or an .npz of its
    names), unchecked."""
    if fmt == "tf-slim":
        arrays = load_npz(src) if Path(src).suffix == ".npz" else read_tf_checkpoint(src)
        return convert_tf_slim(arrays, origin=src)
    if fmt == "torchvision":
        return convert_torchvision_googlenet(read_state_dict(src), origin=src)
    raise _unknown(fmt, INCEPTION_V1_FORMATS)


def convert_inception_v1_checkpoint(
    fmt: str, src: str, stream: str | None = None, fold_scale: bool = False
):
    """(variables, ModelMetadata) of an ImageNet Inception-v1 checkpoint,
    checked against our 2D model."""
    variables = read_inception_v1(fmt, src)
    if fold_scale:
        variables = common.fold_batch_norm_scale(variables)
    fields, stream = check_inception_v1(variables, src, stream)
    return variables, _metadata("inception_v1", stream, fmt, src, fields)


def convert_checkpoint(fmt: str, src: str, stream: str | None = None, fold_scale: bool = False):
    """(variables, ModelMetadata) of an external checkpoint, checked against its
    model: I3D, or our 2D Inception-v1 for tf-slim and torchvision.
    `fold_scale` folds BatchNorm gamma into the convs (exact at inference)."""
    if fmt in INCEPTION_V1_FORMATS:
        return convert_inception_v1_checkpoint(fmt, src, stream, fold_scale)
    if fmt not in I3D_FORMATS:
        raise _unknown(fmt, CONVERT_FORMATS)
    variables = read_i3d(fmt, src, stream)
    if fold_scale:
        variables = common.fold_batch_norm_scale(variables)
    fields, stream = common.check_i3d(variables, src, stream)
    return variables, _metadata("i3d", stream, fmt, src, fields)
