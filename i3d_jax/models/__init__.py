"""Linen modules, one file per architecture family."""
from i3d_jax.models.i3d import ENDPOINTS, InceptionI3d

ARCHITECTURES = {"i3d": InceptionI3d}


def build_model(architecture: str, **kwargs):
    """Returns the linen module named `architecture` with `kwargs` as fields."""
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}"
        )
    return ARCHITECTURES[architecture](**kwargs)


__all__ = ["ARCHITECTURES", "ENDPOINTS", "InceptionI3d", "build_model"]
