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
init is computed). For an abstract target, `inflate_variables` initialises a
classifier of another size as flax initialises a new conv (LeCun normal
kernel, zero bias) and a BatchNorm scale the source lacks at 1;
`init_from_inception_v1` takes the model's own `init` and computes, jitted,
only the leaves that do not come from the source (the layers an
architecture adds, such as the 3D-Fused Two-Stream's fusion conv), so an
abstract target gives what the concrete `init(rng)` would.

`inflate_checkpoint` is `i3d-jax inflate`: a 2D checkpoint in, I3D out.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable

import jax
import numpy as np
from flax import traverse_util

from i3d_jax.convert.common import CheckpointMismatchError, flat_key, fold_batch_norm_scale
from i3d_jax.streams import STREAM_CHANNELS

# What `i3d-jax inflate` reads: an Orbax checkpoint of our 2D inception_v1, or
# an ImageNet checkpoint as distributed.
SOURCES = ("flax", "tf-slim", "torchvision")

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


def _inflation_plan(source, initial, origin: str) -> dict:
    """{path: the inflated source value, or None where `initial` keeps its
    own leaf} over the {params, batch_stats} of `initial`. Raises
    CheckpointMismatchError naming every leaf that has no counterpart or
    whose shape cannot come from it."""
    if _has_scale(source) and not _has_scale(initial):
        source = fold_batch_norm_scale(source)
    flat_source = traverse_util.flatten_dict({k: source[k] for k in ("params", "batch_stats")})
    flat_initial = traverse_util.flatten_dict({k: initial[k] for k in ("params", "batch_stats")})
    plan, missing, misshaped = {}, [], []
    for path, init_value in flat_initial.items():
        target_shape = tuple(np.shape(init_value))
        is_classifier = path[1] == CLASSIFIER
        src_path = source_key(path)
        if src_path not in flat_source:
            # A BatchNorm scale the source lacks stays at its identity init,
            # and a classifier the source lacks stays fresh.
            if path[-1] == "scale" or is_classifier:
                plan[path] = None
            else:
                missing.append(flat_key(path))
            continue
        value = np.asarray(flat_source[src_path])
        if path[-1] == "kernel" and value.ndim + 1 == len(target_shape):
            value = inflate_kernel(value, target_shape[0])
        if path[-1] == "kernel" and path[1] in FIRST_CONVS and value.shape[-2] != target_shape[-2]:
            value = adapt_input_channels(value, target_shape[-2])
        if value.shape == target_shape:
            plan[path] = value.astype(init_value.dtype)
        elif is_classifier:
            plan[path] = None  # another number of classes
        else:
            misshaped.append((flat_key(path), value.shape, target_shape))
    if missing or misshaped:
        raise CheckpointMismatchError(origin, missing, (), misshaped)
    return plan


def inflate_variables(source, initial, origin: str = "2D Inception-v1", rng=None):
    """`initial` (an Inception network's {params, batch_stats}: I3D or 2D, at
    the same width as `source`; concrete or abstract) with every leaf
    replaced by its inflated 2D counterpart from `source`. `rng` (a JAX key,
    default key 0) initialises an abstract classifier of another size.
    Raises CheckpointMismatchError naming every leaf that has no counterpart
    or whose shape cannot come from it.
    """
    rng = jax.random.PRNGKey(0) if rng is None else rng
    flat_initial = traverse_util.flatten_dict({k: initial[k] for k in ("params", "batch_stats")})
    plan = _inflation_plan(source, initial, origin)
    out = {
        path: _fresh(path, flat_initial[path], rng) if value is None else value
        for path, value in plan.items()
    }
    return traverse_util.unflatten_dict(out)


def _subtree(variables, path):
    out = {}
    for collection in ("params", "batch_stats"):
        node = variables.get(collection, {})
        for key in path:
            node = node.get(key, {})
        out[collection] = node
    return out


def _is_abstract(leaf) -> bool:
    return isinstance(leaf, jax.ShapeDtypeStruct)


def _computed_leaves(init: Callable, rng, wanted: dict) -> dict:
    """{path: array} of the `wanted` leaves ({path: ShapeDtypeStruct}) of
    `init(rng)`. Jitted, so XLA computes only those leaves: the rest of the
    init, a forward pass included, is dead code."""
    paths = sorted(wanted)

    def leaves(key):
        flat = traverse_util.flatten_dict(dict(init(key)))
        return [flat[p] for p in paths]

    try:
        values = jax.jit(leaves)(rng)
    except KeyError as e:
        raise ValueError(
            f"init(rng) gives no leaf {flat_key(e.args[0])}, which the target has: "
            "pass the init of the model the target was traced from"
        ) from None
    out = {}
    for path, value in zip(paths, values):
        if (value.shape, value.dtype) != (wanted[path].shape, wanted[path].dtype):
            raise ValueError(
                f"init(rng) gives {flat_key(path)} as {value.dtype}{list(value.shape)}, "
                f"the target has {wanted[path].dtype}{list(wanted[path].shape)}"
            )
        out[path] = np.asarray(value)
    return out


def init_from_inception_v1(
    architecture: str,
    initial,
    source,
    origin: str = "2D Inception-v1",
    rng=None,
    init: Callable | None = None,
):
    """`initial` variables of `architecture` with each of its Inception-v1
    networks taken from the 2D `source` (inflated where 3D); the layers the
    architecture adds (LSTM, fusion, classifiers of other sizes) keep their
    initial values.

    `initial` may be abstract (ShapeDtypeStructs from `jax.eval_shape`), as a
    trainer that shards its parameters from their shapes has them. Its
    leaves that do not come from `source` are then computed by
    `init(rng)` (the model's init, e.g.
    `lambda key: model.init(key, inputs, train=False)`; only those leaves
    are computed), so the result equals that for the concrete
    `init(rng)`. Without `init`, the abstract leaves inside an Inception
    network are initialised as `inflate_variables` does, and abstract leaves
    outside them are an error. The result holds NumPy arrays only.
    """
    if architecture not in INCEPTION_SUBTREES:
        raise ValueError(
            f"{architecture} has no Inception-v1 layers to take from {origin}; the paper trains it "
            f"from scratch (architectures that can: {', '.join(sorted(INCEPTION_SUBTREES))})"
        )
    rng = jax.random.PRNGKey(0) if rng is None else rng
    # Full paths of the leaves from the source, and of those inside an
    # Inception network that keep `initial`'s (with their path inside it).
    taken, kept = {}, {}
    for path in INCEPTION_SUBTREES[architecture]:
        where = f"{origin} -> {architecture}" + (f"/{'/'.join(path)}" if path else "")
        plan = _inflation_plan(source, _subtree(initial, path), where)
        for local, value in plan.items():
            full = (local[0], *path, *local[1:])
            if value is None:
                kept[full] = local
            else:
                taken[full] = value
    flat_initial = traverse_util.flatten_dict(dict(initial), keep_empty_nodes=True)
    abstract = {p: v for p, v in flat_initial.items() if p not in taken and _is_abstract(v)}
    if abstract and init is not None:
        computed = _computed_leaves(init, rng, abstract)
    else:
        outside = sorted(flat_key(p) for p in abstract if p not in kept)
        if outside:
            raise ValueError(
                f"{architecture}: an abstract target, but {len(outside)} of its leaves come from "
                f"no Inception-v1 network ({', '.join(outside)}); pass init= (the model's init, "
                "`lambda key: model.init(key, inputs, train=False)`) to compute them"
            )
        # As `inflate_variables` initialises them, keyed by the path inside the network.
        computed = {p: _fresh(kept[p], v, rng) for p, v in abstract.items()}
    out = {}
    for path, value in flat_initial.items():
        if path in taken:
            out[path] = taken[path]
        elif path in computed:
            out[path] = computed[path]
        elif value is traverse_util.empty_node:
            out[path] = value  # an empty collection stays in the tree
        else:
            out[path] = np.asarray(value)
    return traverse_util.unflatten_dict(out)


def read_source(fmt: str, src: str):
    """(2D variables, its ModelMetadata) from an Orbax checkpoint of our
    InceptionV1 (`flax`) or an ImageNet checkpoint as distributed."""
    if fmt == "flax":
        from i3d_jax.checkpoints import load_pretrained

        metadata, variables = load_pretrained(src)
        if metadata.architecture != "inception_v1":
            raise ValueError(
                f"{src} holds a {metadata.architecture!r} checkpoint; inflate needs a 2D "
                "'inception_v1' one (write it with `i3d-jax convert --from tf-slim|torchvision`)"
            )
        return variables, metadata
    if fmt in ("tf-slim", "torchvision"):
        from i3d_jax.convert import convert_inception_v1_checkpoint

        return convert_inception_v1_checkpoint(fmt, src)
    raise ValueError(f"unknown source format {fmt!r}; choose one of {', '.join(SOURCES)}")


def inflate_checkpoint(
    fmt: str,
    src: str,
    stream: str = "rgb",
    num_classes: int | None = None,
    keep_batch_norm_scale: bool = False,
    seed: int = 0,
):
    """An I3D inflated from the 2D Inception-v1 checkpoint `src` (in format
    `fmt`, one of SOURCES). Returns (I3D variables, its ModelMetadata, the
    source's ModelMetadata): the last tells whether the classifier was
    inflated (same number of classes) and holds the source's label names."""
    from i3d_jax.checkpoints import ModelMetadata
    from i3d_jax.convert.common import expected_variables

    if num_classes is not None and num_classes < 1:
        raise ValueError(f"--num-classes {num_classes}: need at least one class")
    if stream not in STREAM_CHANNELS:
        raise ValueError(f"unknown stream {stream!r}; choose one of {', '.join(STREAM_CHANNELS)}")
    source, source_meta = read_source(fmt, src)
    if source_meta.in_channels != STREAM_CHANNELS["rgb"]:
        raise ValueError(
            f"{src}: first conv takes {source_meta.in_channels} channels; "
            "inflation starts from an RGB (3-channel) Inception-v1"
        )
    in_channels = STREAM_CHANNELS[stream]
    metadata = ModelMetadata(
        architecture="i3d",
        stream=stream,
        num_classes=num_classes or source_meta.num_classes,
        in_channels=in_channels,
        batch_norm_scale=keep_batch_norm_scale and source_meta.batch_norm_scale,
        source=f"inflated from {source_meta.source or f'{fmt}:{Path(src).name}'}",
    )
    # Shapes only: every leaf comes from the source or, for a classifier of
    # another size, from a fresh initialisation of that leaf alone.
    target = expected_variables(metadata.build_model(), in_channels)
    variables = inflate_variables(source, target, origin=src, rng=jax.random.PRNGKey(seed))
    return variables, metadata, source_meta
