"""The CPU kernels: the forms XLA:CPU runs fast, as one `Kernels` set.

- `conv.py`: SAME convolutions, 2D and 3D (oneDNN's direct convolution or
  stacked temporal taps forward; gradients as matrix products or as lax's
  laid out for Eigen);
- `onednn.py`: the oneDNN convolution custom call that jaxlib's XLA:CPU
  carries, and its self-check;
- `reductions.py`: the SAME max-pool, BatchNorm's batch statistics and the
  gradient's global norm.

Imported only where `i3d_jax.kernels.choose_kernels` chooses "cpu" (on JAX's
CPU backend), the one place in the package that reaches into `jax._src`
(`onednn.py`). The forms are fixed here, once per process, from what the
process started with: oneDNN where its self-check passes, and the gradient
form that is faster on this CPU under the XLA_FLAGS XLA read
(docs/benchmarks.md).
"""
from __future__ import annotations

import functools

import jax

from i3d_jax.kernels import host, xla_flags
from i3d_jax.kernels.xla import Kernels
from i3d_jax.kernels.cpu import conv, onednn, reductions


def gradient_form(flags: str, cpu_flags: frozenset[str] | None = None) -> str:
    """"lax" where the CPU has AMX (`cpu_flags`, this machine's by default) or
    XLA:CPU runs convolutions with its own Eigen kernels (`flags`, XLA_FLAGS
    as XLA started, keep YNNPACK to other fusions); "matrix_products" on a CPU
    without AMX where YNNPACK takes them (its default): each is the faster
    there, as measured on both kinds of CPU (docs/benchmarks.md, "Which
    gradient form"). Both compute the same sums (`tests/test_kernels_cpu.py`
    checks each against lax).
    """
    if "amx_tile" in (host.cpu_flags() if cpu_flags is None else cpu_flags):
        return "lax"
    return "matrix_products" if xla_flags.ynnpack_runs_convolutions(flags) else "lax"


def cond_guard(keep, update, state):
    """`update(state)` where `keep`, else `state`, as a conditional: XLA:CPU
    copied every parameter's old momentum before updating it in place when the
    two were selected between (a Two-Stream step: 252 copies)."""
    return jax.lax.cond(keep, update, lambda state: state, state)


@functools.cache
def make_kernels(forward: str, gradients: str) -> Kernels:
    """The CPU set with these convolution forms (one object per pair)."""
    if forward not in conv.FORWARD_FORMS or gradients not in conv.GRADIENT_FORMS:
        raise ValueError(f"forward {forward!r} / gradients {gradients!r}: expected one of "
                         f"{conv.FORWARD_FORMS} / {conv.GRADIENT_FORMS}")
    forward_text = ("oneDNN forward convolutions" if forward == "onednn"
                    else "stacked-taps forward convolutions")
    return Kernels(
        name="cpu",
        description=f"{forward_text}, {gradients.replace('_', ' ')} kernel gradients",
        conv_general_dilated=functools.partial(conv.conv_general_dilated, forward=forward,
                                               gradients=gradients),
        max_pool=reductions.max_pool_same, batch_norm=reductions.batch_norm,
        global_norm=reductions.global_norm, guard=cond_guard)


def cpu_kernels(flags: str, require_onednn: bool) -> tuple[Kernels | None, str]:
    """(the CPU set for this process, why), or (None, why) where
    `require_onednn` and oneDNN's self-check fails here. `flags`: the
    XLA_FLAGS XLA started with."""
    if onednn.available():
        onednn.available("bfloat16")  # decided now, not while a model is traced
        forward, why = "onednn", "oneDNN's self-check passed"
    elif require_onednn:
        return None, "oneDNN's self-check failed on this jaxlib"
    else:
        forward, why = "stacked_taps", "asked for; oneDNN's self-check failed"
    return make_kernels(forward, gradient_form(flags)), why
