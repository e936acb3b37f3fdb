"""Getting models out of JAX: a serialised StableHLO program, a TF SavedModel
with TF-Hub's `i3d-kinetics-400` signature, and pytorch-i3d's `state_dict`.

- `export_stablehlo`: `jax.export` of the inference function, the weights
  inside it, batch and time symbolic (`b`, `t`, with the least clip length the
  architecture's pools need as a constraint), lowered for CPU, CUDA and TPU;
  one file, plus `PATH.json` describing inputs, outputs and the model.
  `jax.export.deserialize(open(PATH, "rb").read()).call(clip)` runs it.
- `export_savedmodel`: the same function through `jax2tf` (native
  serialisation) as a `tf.Module` whose weights are variables; its
  `serving_default` signature takes `input_frames` [B, T, H, W, C] float32 in
  [-1, 1] and returns `logits` [B, classes] (and the chosen endpoint), the names
  TF-Hub's `i3d-kinetics-400` uses.
- `to_pytorch_i3d`: I3D's variables under piergiaj/pytorch-i3d's names and
  layouts (the inverse of `convert --from pytorch-i3d`), BatchNorm gamma as
  ones where ours has no scale, `num_batches_tracked` present; written as
  `.pt` (torch.save) or `.npz` with the same names.

Every output is written beside its target and renamed into place when whole.
Models compute with XLA's own kernels here: an exported program runs on any
backend, and the CPU kernels' custom call would tie it to one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from i3d_jax.atomic_file import atomic_output, write_atomically
from i3d_jax.checkpoints import ModelMetadata
from i3d_jax.kernels import XLA
from i3d_jax.streams import STREAM_CHANNELS

FORMATS = ("stablehlo", "savedmodel", "pytorch-i3d")
# Where an exported program runs: jax.export lowers for each of them.
PLATFORMS = ("cpu", "cuda", "tpu")
# I3D's last pools halve time three times and its average pool takes 2 of
# what is left: fewer frames than this leave a one-step window, which the
# symbolic program cannot choose (the eager model clamps it).
I3D_MIN_FRAMES = 9
INPUT_RANGE = (-1.0, 1.0)


def input_signature(metadata: ModelMetadata, endpoint: str = "Logits") -> dict:
    """{stream: (shape spec with b and t, channels)} of an architecture's inputs
    and the constraints on the symbols, at the paper's frame size."""
    arch = metadata.architecture
    channels = {s: STREAM_CHANNELS[s] for s in metadata.stream.split("+")}
    if arch == "inception_v1":
        return {"shapes": {metadata.stream: f"b, 224, 224, {metadata.in_channels}"},
                "constraints": []}
    if arch == "conv3d":  # its fc6 fixes the clip: 16x112x112
        return {"shapes": {"rgb": "b, 16, 112, 112, 3"}, "constraints": []}
    if arch in ("i3d", "convnet_lstm"):
        stream = metadata.stream
        pooled = arch == "i3d" and endpoint in ("AvgPool", "LogitsPerTime", "Logits")
        return {"shapes": {stream: f"b, t, 224, 224, {metadata.in_channels}"},
                "constraints": [f"t >= {I3D_MIN_FRAMES}"] if pooled else []}
    if arch == "two_stream_i3d":
        return {"shapes": {s: f"b, t, 224, 224, {c}" for s, c in channels.items()},
                "constraints": [f"t >= {I3D_MIN_FRAMES}"]}
    if arch in ("two_stream", "two_stream_fused"):  # 10 flow frames a stack
        return {"shapes": {"rgb": "b, t, 224, 224, 3", "flow": "b, 10*t, 224, 224, 2"},
                "constraints": []}
    raise ValueError(f"no export signature for architecture {arch!r}")


def _symbolic_args(signature: dict):
    scope = jax.export.SymbolicScope(signature["constraints"])
    args = {s: jax.ShapeDtypeStruct(jax.export.symbolic_shape(spec, scope=scope), jnp.float32)
            for s, spec in signature["shapes"].items()}
    return args if len(args) > 1 else next(iter(args.values()))


def inference_function(metadata: ModelMetadata, endpoint: str = "Logits"):
    """(apply(variables, inputs) -> {"logits", endpoint}, the model): eval mode,
    XLA's kernels; the endpoint's output besides the logits where it is another."""
    model = metadata.build_model(kernels=XLA)
    if endpoint == "Logits":
        def apply(variables, inputs):
            return {"logits": model.apply(variables, inputs, train=False)}
        return apply, model

    def apply(variables, inputs):
        logits, endpoints = model.apply(variables, inputs, train=False, return_endpoints=True)
        if endpoint not in endpoints:
            raise ValueError(f"--endpoint {endpoint!r}: {metadata.architecture} has "
                             f"{', '.join(sorted(endpoints))}")
        return {"logits": logits, endpoint: endpoints[endpoint]}
    return apply, model


def _params_sha256(variables) -> str:
    from i3d_jax.models.stats import params_sha256

    return params_sha256(variables["params"])


def describe(metadata: ModelMetadata, variables, endpoint: str, signature: dict,
             fmt: str, outputs: dict) -> dict:
    """The JSON beside an export: inputs, outputs, the model and its weights."""
    return {
        "format": fmt, "architecture": metadata.architecture, "stream": metadata.stream,
        "num_classes": metadata.num_classes, "labels": list(metadata.labels),
        "source": metadata.source, "params_sha256": _params_sha256(variables),
        "inputs": {s: {"shape": [d.strip() if not d.strip().isdigit() else int(d)
                                 for d in spec.split(",")],
                       "dtype": "float32", "range": list(INPUT_RANGE)}
                   for s, spec in signature["shapes"].items()},
        "constraints": signature["constraints"], "endpoint": endpoint,
        "outputs": outputs, "jax_version": jax.__version__,
    }


def export_stablehlo(metadata: ModelMetadata, variables, out, endpoint: str = "Logits",
                     overwrite: bool = False) -> dict:
    """Writes the serialised program to `out` and its description to `out`.json;
    returns the description."""
    out = Path(out)
    check_output(out, overwrite)
    check_output(Path(f"{out}.json"), overwrite)
    apply, _ = inference_function(metadata, endpoint)
    signature = input_signature(metadata, endpoint)
    constants = jax.tree.map(jnp.asarray, variables)
    exported = jax.export.export(jax.jit(lambda inputs: apply(constants, inputs)),
                                 platforms=PLATFORMS)(_symbolic_args(signature))
    out_avals = jax.tree_util.tree_unflatten(exported.out_tree, exported.out_avals)
    outputs = {name: [str(d) for d in aval.shape] for name, aval in out_avals.items()}
    description = describe(metadata, variables, endpoint, signature, "stablehlo", outputs)
    description["platforms"] = list(exported.platforms)
    write_atomically(out, lambda f: f.write(exported.serialize()))
    text = json.dumps(description, indent=1) + "\n"
    write_atomically(Path(f"{out}.json"), lambda f: f.write(text.encode()))
    return description


def export_savedmodel(metadata: ModelMetadata, variables, out, endpoint: str = "Logits",
                      overwrite: bool = False) -> dict:
    """Writes a TF SavedModel directory to `out` (weights as variables; the
    `serving_default` signature takes `input_frames`); returns its description,
    also written as `out/i3d_jax.json`."""
    signature = input_signature(metadata, endpoint)
    if len(signature["shapes"]) != 1:
        raise ValueError(
            f"--format savedmodel takes one input tensor (TF-Hub's input_frames); "
            f"{metadata.architecture} takes {' and '.join(signature['shapes'])}: export it with "
            "--format stablehlo")
    out = Path(out)
    check_output(out, overwrite)
    import tensorflow as tf
    from jax.experimental import jax2tf

    from i3d_jax.datasets.tf_setup import hide_gpus_from_tf

    hide_gpus_from_tf()
    apply, _ = inference_function(metadata, endpoint)
    (spec,) = signature["shapes"].values()
    converted = jax2tf.convert(
        apply, polymorphic_shapes=[None, f"({spec})"],
        polymorphic_constraints=tuple(signature["constraints"]), with_gradient=False,
        native_serialization_platforms=PLATFORMS)
    module = tf.Module()
    module.variables_ = tf.nest.map_structure(
        lambda v: tf.Variable(np.asarray(v), trainable=False), jax.tree.map(np.asarray, variables))
    shape = [None if d.strip().isalpha() else int(d) for d in spec.split(",")]

    @tf.function(autograph=False, input_signature=[
        tf.TensorSpec(shape, tf.float32, name="input_frames")])
    def serve(input_frames):
        return converted(module.variables_, input_frames)

    module.serve = serve
    outputs = {k: [str(d) for d in v.shape]
               for k, v in serve.get_concrete_function().structured_outputs.items()}
    description = describe(metadata, variables, endpoint, signature, "savedmodel", outputs)
    description["inputs"] = {"input_frames": next(iter(description["inputs"].values()))}
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tf.saved_model.save(module, str(staging), signatures={"serving_default": serve})
        (staging / "i3d_jax.json").write_text(json.dumps(description, indent=1) + "\n")
        _replace_directory(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return description


# pytorch-i3d's names: its units and the leaves of each (`convert/pytorch_i3d.py` reads them).
def to_pytorch_i3d(variables, metadata: ModelMetadata) -> dict[str, np.ndarray]:
    """{pytorch-i3d state_dict name: array} of an I3D's variables, in its layouts."""
    from i3d_jax.convert.common import i3d_units
    from i3d_jax.convert.pytorch_i3d import pytorch_prefix

    if metadata.architecture != "i3d":
        raise ValueError(
            f"--format pytorch-i3d writes I3D's state_dict; this checkpoint holds "
            f"{metadata.architecture!r}: export it with --format stablehlo "
            "(or savedmodel, for one input tensor)")
    params = traverse_util.flatten_dict(jax.tree.map(np.asarray, variables["params"]))
    stats = traverse_util.flatten_dict(jax.tree.map(np.asarray, variables["batch_stats"]))
    state = {}
    for unit in i3d_units():
        prefix = pytorch_prefix(unit)
        kernel = params[unit + ("conv_3d", "kernel")]
        state[f"{prefix}.conv3d.weight"] = np.ascontiguousarray(
            np.transpose(kernel, (4, 3, 0, 1, 2)))  # [t,h,w,in,out] -> [out,in,t,h,w]
        if unit == ("Logits",):
            state[f"{prefix}.conv3d.bias"] = params[unit + ("conv_3d", "bias")]
            continue
        channels = kernel.shape[-1]
        state[f"{prefix}.bn.weight"] = params.get(unit + ("batch_norm", "scale"),
                                                  np.ones(channels, np.float32))
        state[f"{prefix}.bn.bias"] = params[unit + ("batch_norm", "bias")]
        state[f"{prefix}.bn.running_mean"] = stats[unit + ("batch_norm", "mean")].reshape(-1)
        state[f"{prefix}.bn.running_var"] = stats[unit + ("batch_norm", "var")].reshape(-1)
        state[f"{prefix}.bn.num_batches_tracked"] = np.array(0, np.int64)
    return {k: np.asarray(v, np.int64 if k.endswith("num_batches_tracked") else np.float32)
            for k, v in state.items()}


def export_pytorch_i3d(metadata: ModelMetadata, variables, out, overwrite: bool = False) -> dict:
    """Writes pytorch-i3d's state_dict to `out`: `.pt`/`.pth` through torch.save,
    `.npz` with the same names; returns {"format", "tensors", "params_sha256"}."""
    out = Path(out)
    if out.suffix not in (".pt", ".pth", ".npz"):
        raise ValueError(f"--out {out}: a pytorch-i3d state_dict is written as .pt, .pth or .npz")
    check_output(out, overwrite)
    state = to_pytorch_i3d(variables, metadata)
    if out.suffix == ".npz":
        with atomic_output(out) as tmp:
            np.savez(tmp, **state)
    else:
        try:
            import torch
        except ImportError:
            raise ImportError(f"--out {out}: writing .pt needs PyTorch; install torch, or "
                              "write .npz (the same names)") from None
        with atomic_output(out) as tmp:
            torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp)
    return {"format": "pytorch-i3d", "tensors": len(state),
            "params_sha256": _params_sha256(variables)}


def check_output(path: Path, overwrite: bool) -> None:
    """Refuses an existing `path` without `overwrite`, and a folder it cannot be written in."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another --out or pass --overwrite")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise FileNotFoundError(f"--out {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"--out {path}: the folder {parent} is not writable")


def _replace_directory(staging: Path, out: Path) -> None:
    """`staging` renamed to `out`; an old `out` is kept aside until then."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
