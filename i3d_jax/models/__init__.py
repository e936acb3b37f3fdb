"""Linen modules, one file per architecture family."""
from i3d_jax.models.i3d import ENDPOINTS, InceptionI3d
from i3d_jax.models.inception_v1 import ENDPOINTS_2D, InceptionV1

ARCHITECTURES = {"i3d": InceptionI3d, "inception_v1": InceptionV1}


def build_model(architecture: str, **kwargs):
    """Returns the linen module named `architecture` with `kwargs` as fields."""
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}"
        )
    return ARCHITECTURES[architecture](**kwargs)


__all__ = ["ARCHITECTURES", "ENDPOINTS", "ENDPOINTS_2D", "InceptionI3d", "InceptionV1", "build_model"]
