"""What the 2D Inception-v1 converters share: its unit layout, the check of
a converted tree against the model, and `convert --from tf-slim|torchvision`."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from i3d_jax.convert.common import check_fits, fold_batch_norm_scale, i3d_units

INCEPTION_V1_FORMATS = ("tf-slim", "torchvision")


def inception_v1_units() -> list[tuple[str, ...]]:
    """Every conv unit of Inception-v1 as its path in our parameter tree:
    I3D's with Conv3d -> Conv2d (the logits unit keeps its name)."""
    return [tuple(part.replace("Conv3d", "Conv2d") for part in unit) for unit in i3d_units()]


def expected_inception_v1_variables(model, in_channels: int):
    """Abstract {params, batch_stats} of a 2D `model` (shapes only, no compute)."""
    images = jnp.zeros((1, 224, 224, in_channels), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), images)
    return {k: v for k, v in shapes.items() if k in ("params", "batch_stats")}


def infer_inception_v1_fields(variables) -> dict:
    """num_classes, in_channels and batch_norm_scale of an Inception-v1 tree."""
    params = variables["params"]
    return {
        "num_classes": int(np.shape(params["Logits"]["conv_2d"]["bias"])[0]),
        "in_channels": int(np.shape(params["Conv2d_1a_7x7"]["conv_2d"]["kernel"])[2]),
        "batch_norm_scale": "scale" in params["Conv2d_1a_7x7"]["batch_norm"],
    }


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as e:
        raise ValueError(f"{path}: not a readable .npz ({e})") from None


def read_inception_v1(fmt: str, src: str):
    """Our 2D variables from a checkpoint as distributed (or an .npz of its names)."""
    if fmt == "tf-slim":
        from i3d_jax.convert.deepmind import read_tf_checkpoint
        from i3d_jax.convert.tf_slim import convert_tf_slim

        path = Path(src)
        if path.suffix == ".npz":
            if not path.exists():
                raise FileNotFoundError(f"{path}: no such file")
            arrays = read_npz(path)
        else:
            arrays = read_tf_checkpoint(src)
        return convert_tf_slim(arrays, origin=src)
    if fmt == "torchvision":
        from i3d_jax.convert.pytorch_i3d import read_state_dict
        from i3d_jax.convert.torchvision_googlenet import convert_torchvision_googlenet

        return convert_torchvision_googlenet(read_state_dict(src), origin=src)
    raise ValueError(f"unknown 2D format {fmt!r}; choose one of {', '.join(INCEPTION_V1_FORMATS)}")


def convert_inception_v1_checkpoint(
    fmt: str, src: str, stream: str | None = None, fold_scale: bool = False
):
    """(variables, ModelMetadata) of an ImageNet Inception-v1 checkpoint,
    checked against our 2D model."""
    from i3d_jax.checkpoints import ModelMetadata

    variables = read_inception_v1(fmt, src)
    if fold_scale:
        variables = fold_batch_norm_scale(variables)
    fields = infer_inception_v1_fields(variables)
    channel_stream = {3: "rgb", 2: "flow"}.get(fields["in_channels"])
    if channel_stream is None:
        raise ValueError(f"{src}: first conv takes {fields['in_channels']} channels; expected 3")
    if stream and stream != channel_stream:
        raise ValueError(
            f"{src}: --stream {stream}, but its first conv takes {channel_stream} input; "
            "`i3d-jax inflate --stream flow` makes a flow I3D from RGB weights"
        )
    metadata = ModelMetadata(
        architecture="inception_v1",
        stream=channel_stream,
        source=f"{fmt}:{Path(src).name}",
        **fields,
    )
    check_fits(
        variables,
        expected_inception_v1_variables(metadata.build_model(), fields["in_channels"]),
        src,
    )
    return variables, metadata
