"""What every checkpoint converter shares: the I3D unit layout and the check
of a converted tree against the model it must fit."""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from i3d_jax.models.i3d import BRANCH_UNITS, INCEPTION_CHANNELS, InceptionI3d
from i3d_jax.models.stats import abstract_variables
from i3d_jax.streams import stream_for_channels

# Our parameter tree, per unit: params[unit]{conv_3d{kernel,bias?},
# batch_norm{bias,scale?}}, batch_stats[unit]{batch_norm{mean,var}}.
STEM_UNITS = ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3")


def i3d_units() -> list[tuple[str, ...]]:
    """Every conv unit of I3D as its path in our parameter tree."""
    units = [(name,) for name in STEM_UNITS]
    units += [(block, unit) for block in INCEPTION_CHANNELS for unit in BRANCH_UNITS]
    units.append(("Logits",))
    return units


def tf_variable_scope(unit: tuple[str, ...], rank: int = 3) -> str:
    """TF-slim's (rank 2) or DeepMind I3D's (rank 3) variable scope of one of
    our units: ("Mixed_3b", "Branch_1_Conv3d_0b_3x3") -> "Mixed_3b/Branch_1/Conv3d_0b_3x3"."""
    conv = f"Conv{rank}d"
    if unit == ("Logits",):
        return f"Logits/{conv}_0c_1x1"
    if len(unit) == 1:
        return unit[0]
    block, branch_unit = unit
    branch, name = branch_unit.split(f"_{conv}_")
    if block == "Mixed_5b" and name == "0b_3x3" and branch == "Branch_2":
        # slim's own name for this one unit, which DeepMind's I3D kept.
        name = "0a_3x3"
    return f"{block}/{branch}/{conv}_{name}"


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fit the model, with every differing key."""

    def __init__(self, source, missing=(), unexpected=(), misshaped=()):
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.misshaped = sorted(misshaped)
        lines = [f"{source} does not fit the model:"]
        if self.missing:
            lines.append(f"  missing keys ({len(self.missing)}): " + ", ".join(self.missing))
        if self.unexpected:
            lines.append(
                f"  unexpected keys ({len(self.unexpected)}): " + ", ".join(self.unexpected)
            )
        for key, got, want in self.misshaped:
            lines.append(f"  mis-shaped {key}: checkpoint has {got}, model expects {want}")
        super().__init__("\n".join(lines))


def flat_key(path: Iterable[str]) -> str:
    return "/".join(path)


def params_and_stats(variables) -> dict:
    """The {params, batch_stats} a checkpoint holds, of a model's variables."""
    return {k: v for k, v in variables.items() if k in ("params", "batch_stats")}


def expected_variables(model: InceptionI3d, in_channels: int):
    """Abstract {params, batch_stats} of `model` (shapes only, no compute)."""
    frames = jax.ShapeDtypeStruct((1, 16, 224, 224, in_channels), jnp.float32)
    return params_and_stats(abstract_variables(model, frames))


def check_fits(variables, expected, source: str):
    """Raises CheckpointMismatchError naming every key that differs."""
    got = {flat_key(k): v for k, v in traverse_util.flatten_dict(variables).items()}
    want = {flat_key(k): v for k, v in traverse_util.flatten_dict(expected).items()}
    misshaped = [
        (k, tuple(np.shape(got[k])), tuple(want[k].shape))
        for k in sorted(set(got) & set(want))
        if tuple(np.shape(got[k])) != tuple(want[k].shape)
    ]
    missing = set(want) - set(got)
    unexpected = set(got) - set(want)
    if missing or unexpected or misshaped:
        raise CheckpointMismatchError(source, missing, unexpected, misshaped)


def gather_units(
    source: Mapping[str, np.ndarray],
    source_name: Callable[[tuple[str, ...], str], str],
    transform: Callable[[str, np.ndarray], np.ndarray],
    ignorable: Callable[[str], bool],
    origin: str,
    units: Iterable[tuple[str, ...]] | None = None,
    conv: str = "conv_3d",
):
    """Builds {params, batch_stats} from a flat `source` of named arrays.

    `source_name(unit, leaf)` gives the source's name for one leaf of a unit
    (leaf in kernel, bias, beta, gamma, mean, var); `transform(leaf, array)`
    turns a source array into ours. Source names that no unit consumes and
    that are not `ignorable` are reported, together with missing ones.
    `units` (default: I3D's) are paths whose convs are named `conv`; the
    last of them, ("Logits",), has a bias and no BatchNorm.
    """
    params, batch_stats = {}, {}
    consumed, missing = set(), set()
    for unit in i3d_units() if units is None else units:
        is_logits = unit == ("Logits",)
        leaves = ("kernel", "bias") if is_logits else ("kernel", "beta", "gamma", "mean", "var")
        for leaf in leaves:
            name = source_name(unit, leaf)
            if name not in source:
                # gamma is optional: DeepMind's BatchNorm has none.
                if leaf != "gamma":
                    missing.add(name)
                continue
            consumed.add(name)
            value = transform(leaf, np.asarray(source[name]))
            if leaf in ("kernel", "bias") and not (leaf == "bias" and not is_logits):
                target, path = params, unit + (conv, leaf)
            elif leaf == "beta":
                target, path = params, unit + ("batch_norm", "bias")
            elif leaf == "gamma":
                target, path = params, unit + ("batch_norm", "scale")
            else:
                target, path = batch_stats, unit + ("batch_norm", leaf)
            target[path] = value
    unexpected = {k for k in source if k not in consumed and not ignorable(k)}
    if missing or unexpected:
        raise CheckpointMismatchError(origin, missing, unexpected)
    return {
        "params": traverse_util.unflatten_dict(params),
        "batch_stats": traverse_util.unflatten_dict(batch_stats),
    }


def infer_model_fields(variables) -> dict:
    """num_classes, in_channels and batch_norm_scale of an I3D tree."""
    params = variables["params"]
    return {
        "num_classes": int(np.shape(params["Logits"]["conv_3d"]["bias"])[0]),
        "in_channels": int(np.shape(params["Conv3d_1a_7x7"]["conv_3d"]["kernel"])[3]),
        "batch_norm_scale": "scale" in params["Conv3d_1a_7x7"]["batch_norm"],
    }


def checked_stream(in_channels: int, stream: str | None, src: str, hint: str = "") -> str:
    """The stream of a checkpoint whose first conv takes `in_channels`, which
    must be the `--stream` asked for, if one was."""
    channel_stream = stream_for_channels(in_channels, f"{src} (first conv)")
    if stream and stream != channel_stream:
        raise ValueError(f"{src}: --stream {stream}, but its first conv takes {channel_stream} input{hint}")
    return channel_stream


def check_i3d(variables, src: str, stream: str | None = None) -> tuple[dict, str]:
    """(model fields, stream) of a converted I3D tree, checked: its first
    conv's channels give the stream, which must be `stream` if one is asked
    for, and the tree must fit the I3D those fields build."""
    fields = infer_model_fields(variables)
    channel_stream = checked_stream(fields["in_channels"], stream, src)
    model = InceptionI3d(num_classes=fields["num_classes"], batch_norm_scale=fields["batch_norm_scale"])
    check_fits(variables, expected_variables(model, fields["in_channels"]), src)
    return fields, channel_stream


def fold_batch_norm_scale(variables):
    """Folds BatchNorm gamma into the preceding conv, exactly, for inference.

    gamma * (W x - m) / s + beta == ((gamma W) x - gamma m) / s + beta, so
    scaling the kernel's output channels and the running mean by gamma gives
    a scale-free tree with identical eval-mode outputs (any sign of gamma).
    """
    params = traverse_util.flatten_dict(variables["params"])
    stats = traverse_util.flatten_dict(variables["batch_stats"])
    for path in [p for p in params if p[-2:] == ("batch_norm", "scale")]:
        unit = path[:-2]
        gamma = np.asarray(params.pop(path))
        # I3D units hold conv_3d, Inception-v1 units conv_2d.
        kernel = next(unit + (c, "kernel") for c in ("conv_3d", "conv_2d") if unit + (c, "kernel") in params)
        params[kernel] = np.asarray(params[kernel]) * gamma
        stats[unit + ("batch_norm", "mean")] = np.asarray(stats[unit + ("batch_norm", "mean")]) * gamma
    return {
        "params": traverse_util.unflatten_dict(params),
        "batch_stats": traverse_util.unflatten_dict(stats),
    }
