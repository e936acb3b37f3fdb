"""2D -> 3D inflation: ImageNet Inception-v1 parameters into I3D (and into
the 2D streams of the other Inception-based architectures), as the paper
bootstraps them from a "boring video" of one repeated image.

Pure functions on {params, batch_stats} pytrees of NumPy arrays:

- each 2D kernel [h, w, in, out] is repeated along time to the 3D kernel's
  temporal size t and divided by t, so a video of one repeated frame gives
  every 3D conv the 2D conv's response on that frame;
- BatchNorm statistics, offsets (and scales, where both models have them)
  are copied; a 2D source with scales folds them into its convs first
  (exact at inference) when the target has none;
- a first conv with other input channels than the RGB source (flow: 2 for
  I3D, 20 for the 2D flow stream of Two-Stream) averages the RGB filters
  over their channels and repeats the average to as many channels;
- a classifier of the source's size is inflated like any conv; one of
  another size keeps the target's fresh initialisation.

The target may be concrete (a model's `init`, whose layers without a 2D
counterpart are kept) or abstract (`jax.eval_shape` of it, so no full-size
init is computed): then a classifier of another size is initialised as
flax initialises a new conv (LeCun normal kernel, zero bias) and a
BatchNorm scale the source lacks starts at 1.
"""

from __future__ import annotations

import zlib

import jax
import numpy as np
from flax import traverse_util

from i3d_jax.convert.common import CheckpointMismatchError, flat_key, fold_batch_norm_scale

FIRST_CONVS = ("Conv2d_1a_7x7", "Conv3d_1a_7x7")
CLASSIFIER = "Logits"

# Where each architecture keeps its Inception-v1 networks (paths into params
# and batch_stats); () is the whole tree. conv3d has none: trained from scratch.
INCEPTION_SUBTREES = {
    "inception_v1": ((),),
    "i3d": ((),),
    "convnet_lstm": (("InceptionV1",),),
    "two_stream": (("rgb",), ("flow",)),
    "two_stream_fused": (("rgb",), ("flow",)),
    "two_stream_i3d": (("rgb",), ("flow",)),
}


def inflate_kernel(kernel_2d, temporal_size: int) -> np.ndarray:
    """[h, w, in, out] -> [t, h, w, in, out]: repeated t times, divided by t."""
    kernel_2d = np.asarray(kernel_2d)
    return np.repeat(kernel_2d[None], temporal_size, axis=0) / np.float32(temporal_size)


def adapt_input_channels(kernel, channels: int) -> np.ndarray:
    """A first-conv kernel [..., in, out] for `channels` inputs: its filters
    averaged over the source's input channels, repeated `channels` times."""
    kernel = np.asarray(kernel)
    mean = kernel.mean(axis=-2, keepdims=True)
    return np.repeat(mean, channels, axis=-2)


def source_key(path: tuple[str, ...]) -> tuple[str, ...]:
    """The 2D Inception-v1 path of an I3D path (the same for a 2D path)."""
    return tuple(k.replace("Conv3d", "Conv2d").replace("conv_3d", "conv_2d") for k in path)


def _has_scale(variables) -> bool:
    return any(
        path[-2:] == ("batch_norm", "scale")
        for path in traverse_util.flatten_dict(variables["params"])
    )


def _fresh(path: tuple[str, ...], initial, rng):
    """`initial`'s value for a leaf without a 2D counterpart; abstract leaves
    get the initialisation flax gives a new layer."""
    if not isinstance(initial, jax.ShapeDtypeStruct):
        return np.asarray(initial)
    if path[-1] == "kernel":
        key = jax.random.fold_in(rng, zlib.crc32(flat_key(path).encode()))
        return np.asarray(jax.nn.initializers.lecun_normal()(key, initial.shape, initial.dtype))
    if path[-1] == "scale":
        return np.ones(initial.shape, initial.dtype)
    return np.zeros(initial.shape, initial.dtype)


def inflate_variables(source, initial, origin: str = "2D Inception-v1", rng=None):
    """`initial` (an Inception network's {params, batch_stats}: I3D or 2D, at
    the same width as `source`; concrete or abstract) with every leaf
    replaced by its inflated 2D counterpart from `source`. `rng` (a JAX key,
    default key 0) initialises an abstract classifier of another size.
    Raises CheckpointMismatchError naming every leaf that has no counterpart
    or whose shape cannot come from it.
    """
    rng = jax.random.PRNGKey(0) if rng is None else rng
    if _has_scale(source) and not _has_scale(initial):
        source = fold_batch_norm_scale(source)
    flat_source = traverse_util.flatten_dict({k: source[k] for k in ("params", "batch_stats")})
    flat_initial = traverse_util.flatten_dict({k: initial[k] for k in ("params", "batch_stats")})
    out, missing, misshaped = {}, [], []
    for path, init_value in flat_initial.items():
        target_shape = tuple(np.shape(init_value))
        is_classifier = path[1] == CLASSIFIER
        src_path = source_key(path)
        if src_path not in flat_source:
            # A BatchNorm scale the source lacks stays at its identity init,
            # and a classifier the source lacks stays fresh.
            if path[-1] == "scale" or is_classifier:
                out[path] = _fresh(path, init_value, rng)
            else:
                missing.append(flat_key(path))
            continue
        value = np.asarray(flat_source[src_path])
        if path[-1] == "kernel" and value.ndim + 1 == len(target_shape):
            value = inflate_kernel(value, target_shape[0])
        if path[-1] == "kernel" and path[1] in FIRST_CONVS and value.shape[-2] != target_shape[-2]:
            value = adapt_input_channels(value, target_shape[-2])
        if value.shape == target_shape:
            out[path] = value.astype(init_value.dtype)
        elif is_classifier:
            out[path] = _fresh(path, init_value, rng)  # another number of classes
        else:
            misshaped.append((flat_key(path), value.shape, target_shape))
    if missing or misshaped:
        raise CheckpointMismatchError(origin, missing, (), misshaped)
    return traverse_util.unflatten_dict(out)


def _subtree(variables, path):
    out = {}
    for collection in ("params", "batch_stats"):
        node = variables.get(collection, {})
        for key in path:
            node = node.get(key, {})
        out[collection] = node
    return out


def _with_subtree(variables, path, sub):
    variables = {k: dict(v) if isinstance(v, dict) else v for k, v in variables.items()}
    for collection in ("params", "batch_stats"):
        if not path:
            variables[collection] = sub[collection]
            continue
        node = variables[collection] = dict(variables[collection])
        for key in path[:-1]:
            node[key] = dict(node[key])
            node = node[key]
        node[path[-1]] = sub[collection]
    return variables


def init_from_inception_v1(
    architecture: str, initial, source, origin: str = "2D Inception-v1", rng=None
):
    """`initial` variables of `architecture` with each of its Inception-v1
    networks taken from the 2D `source` (inflated where 3D); the layers the
    architecture adds (LSTM, fusion, classifiers of other sizes) keep their
    initial values."""
    if architecture not in INCEPTION_SUBTREES:
        raise ValueError(
            f"{architecture} has no Inception-v1 layers to take from {origin}; the paper trains it "
            f"from scratch (architectures that can: {', '.join(sorted(INCEPTION_SUBTREES))})"
        )
    variables = dict(initial)
    for path in INCEPTION_SUBTREES[architecture]:
        where = f"{origin} -> {architecture}" + (f"/{'/'.join(path)}" if path else "")
        sub = inflate_variables(source, _subtree(variables, path), where, rng)
        variables = _with_subtree(variables, path, sub)
    return variables
