"""What the models compute with, chosen once per process.

A `Kernels` set holds the convolution, max-pool and BatchNorm forms a model
computes with, and the gradient norm and non-finite guard of a train step.
Models take one as their `kernels` field, the way flax's imagenet example
takes `conv` and `norm`; nothing under `models/` reads the backend.

- `XLA`: lax's own operations, what every TPU and GPU runs, and the path the
  parity tests check first. The models' default.
- "cpu": `i3d_jax.kernels.cpu`, the forms XLA:CPU runs fast (oneDNN forward
  convolutions, hand-written gradients, BatchNorm's sums over rows as wide as
  a frame). Imported only when chosen.

`choose_kernels(requested)` decides ("auto" | "xla" | "cpu"), once per process
and before tracing, and logs the choice in one line. "auto" is "cpu" on a CPU
backend where this jaxlib is one the CPU kernels were tested with and their
oneDNN self-check passes, "xla" everywhere else (on an untested jaxlib with a
one-line warning). `i3d_jax.models.build_model` and the trainer call it;
constructing a model class directly gives `XLA` unless told otherwise.
"""
from __future__ import annotations

import functools
import logging

import jax

from i3d_jax.kernels import xla_flags
from i3d_jax.kernels.xla import XLA, Kernels

_LOG = logging.getLogger(__name__)

KERNEL_CHOICES = ("auto", "xla", "cpu")
# The jaxlib releases the CPU kernels were tested with: `kernels/cpu/onednn.py`
# writes a custom call's configuration in the encoding this runtime reads, and
# another release may read it otherwise.
TESTED_JAXLIB = ("0.10.2",)


def jaxlib_version() -> str:
    import jaxlib

    return jaxlib.__version__


__all__ = ["KERNEL_CHOICES", "TESTED_JAXLIB", "XLA", "Kernels", "choose_kernels", "resolve"]


def resolve(kernels: Kernels | str) -> Kernels:
    """A `Kernels` set as it is, or the one `choose_kernels` gives for its name."""
    return kernels if isinstance(kernels, Kernels) else choose_kernels(kernels)


@functools.cache
def choose_kernels(requested: str = "auto") -> Kernels:
    """The kernels for `requested` ("auto", "xla" or "cpu") in this process,
    decided once (cached) before anything is traced; logs the choice in one line.

    Starts JAX's backend if it has not started (to know which it is), and
    then gives XLA_FLAGS back its own value (`xla_flags.restore_environment`).
    """
    if requested not in KERNEL_CHOICES:
        raise ValueError(f"kernels {requested!r} is not one of {', '.join(KERNEL_CHOICES)}")
    backend = jax.default_backend()
    xla_flags.restore_environment()
    added = xla_flags.added_flags()
    flag_note = f"; XLA_FLAGS +{' '.join(added)} (added before JAX started)" if added else ""
    if requested == "xla":
        return _chosen(XLA, "asked for", flag_note)
    if backend != "cpu":
        if requested == "cpu":
            raise ValueError(f"kernels 'cpu' run on JAX's CPU backend only; this process runs "
                             f"on {backend!r} (use 'auto' or 'xla')")
        return _chosen(XLA, f"the backend is {backend}", flag_note)
    version = jaxlib_version()
    if version not in TESTED_JAXLIB:
        message = (f"the CPU kernels were tested with jaxlib {', '.join(TESTED_JAXLIB)}, this "
                   f"is {version}")
        if requested == "auto":
            _LOG.warning("kernels: %s; using XLA's own (kernels 'cpu' forces them)", message)
            return _chosen(XLA, "untested jaxlib", flag_note)
        _LOG.warning("kernels 'cpu' asked for: %s", message)
    from i3d_jax.kernels import cpu

    chosen, why = cpu.cpu_kernels(xla_flags.flags_at_start(), require_onednn=requested == "auto")
    return _chosen(chosen or XLA, why, flag_note)


def _chosen(kernels: Kernels, why: str, flag_note: str) -> Kernels:
    _LOG.info("kernels: %s (%s: %s)%s", kernels.name, why, kernels.description, flag_note)
    return kernels
