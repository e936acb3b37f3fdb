"""Classification and feature extraction with a restored I3D."""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from i3d_jax.checkpoints import ModelMetadata, load_pretrained
from i3d_jax.models import ENDPOINTS

DEFAULT_WEIGHTS = "kinetics400-rgb"


def weights_name(weights: str | None = None, checkpoint: str | None = None) -> str:
    """What `--weights`/`--checkpoint` name, for messages: the checkpoint
    directory, or the named weights (the default where neither is given)."""
    return str(checkpoint) if checkpoint else (weights or DEFAULT_WEIGHTS)


@dataclass
class LoadedModel:
    metadata: ModelMetadata
    variables: dict
    name: str = ""  # the named weights or checkpoint directory it came from

    @classmethod
    def from_options(cls, weights: str | None = None, checkpoint: str | None = None):
        """From a named pretrained set (default kinetics400-rgb) or a checkpoint dir."""
        name = weights_name(weights, checkpoint)
        if checkpoint:
            metadata, variables = load_pretrained(checkpoint)
        else:
            from i3d_jax.weights import load_weights

            metadata, variables = load_weights(name)
        if metadata.architecture != "i3d":
            raise ValueError(
                f"{name}: predict and features run I3D checkpoints; this one holds "
                f"{metadata.architecture!r} (inflate it with `i3d-jax inflate --from flax`)"
            )
        return cls(metadata, variables, name)

    def check_stream(self, stream: str):
        if stream != self.metadata.stream:
            raise ValueError(
                f"--stream {stream} given, but the weights ({self.name or self.metadata.source}) "
                f"are for the {self.metadata.stream} stream ({self.metadata.in_channels} channels)"
            )

    def label(self, index: int) -> str:
        labels = self.metadata.labels
        return labels[index] if labels else f"class_{index}"

    def endpoint_fn(self, endpoint: str, dtype=jnp.float32, kernels="auto"):
        """A function clip [T, H, W, C] -> the endpoint's output for it, jitted
        (compiled once per clip shape); `kernels` as `build_model` takes them."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; choose one of {', '.join(ENDPOINTS)}")
        model = self.metadata.build_model(final_endpoint=endpoint, dtype=dtype, kernels=kernels)
        # An argument of the jitted function, not a constant closed over:
        # constants would be folded into the HLO, slowing every compile and
        # holding the weights twice.
        variables = jax.device_put(self.variables)

        @jax.jit
        def run(variables, clip):
            out = model.apply(variables, clip[None], train=False)
            return out[0].astype(jnp.float32)

        return lambda clip: run(variables, clip)


def softmax(logits):
    logits = np.asarray(logits, np.float64)
    e = np.exp(logits - logits.max())
    return e / e.sum()


def top_k(loaded: LoadedModel, logits, k: int):
    probs = softmax(logits)
    order = np.argsort(-probs)[:k]
    return [{"label": loaded.label(int(i)), "index": int(i), "prob": float(probs[i])} for i in order]
