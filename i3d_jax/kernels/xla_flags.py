"""XLA:CPU's flags for this process, put in place before JAX's CPU client starts.

jaxlib 0.10.2 hands convolutions and elementwise fusions to YNNPACK by
default. Its fused elementwise max crashes the process (a segfault in
ynn::max_fp32_x86_avx512f_avx512bw, the 3D-ConvNet at its paper input on an
AVX-512 EPYC), and its convolutions are the slow ones for our train steps
(docs/benchmarks.md): `--xla_cpu_experimental_ynn_fusion_type=dot` leaves
YNNPACK the matrix products only.

XLA reads XLA_FLAGS once, when its first backend starts (not when jax is
imported), so `import i3d_jax` adds CPU_FLAGS to XLA_FLAGS where the
backend will be the CPU and XLA_FLAGS does not name them already; every
caller, the `i3d-jax` program, a script or a notebook, starts XLA with the
same flags. Once the backend has started, `restore_environment` gives
XLA_FLAGS back its own value, so processes started later inherit nothing
of ours. Plain text and the environment only: no JAX here.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys

# XLA's flag that lists the library fusions XLA:CPU hands to YNNPACK.
YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
CPU_FLAGS = {YNN_FUSION_FLAG: "dot"}

# What this process did: the user's XLA_FLAGS (None: unset), the flags added,
# and the XLA_FLAGS XLA started with as far as this module can know.
_user_value: str | None = None
_added: tuple[str, ...] = ()
_at_start: str | None = None


def with_cpu_flags(xla_flags: str) -> str:
    """`xla_flags` (XLA_FLAGS' value) with each of CPU_FLAGS it does not set."""
    named = {flag.partition("=")[0] for flag in xla_flags.split()}
    added = [f"{name}={value}" for name, value in CPU_FLAGS.items() if name not in named]
    return " ".join([xla_flags.strip(), *added]).strip()


def backend_will_be_cpu(environ=None) -> bool:
    """Whether JAX will run on the CPU, judged before it starts: JAX_PLATFORMS
    names cpu first, or names nothing and no accelerator plugin (CUDA, ROCm:
    `jax_plugins`; TPU: libtpu) is installed."""
    environ = os.environ if environ is None else environ
    platforms = environ.get("JAX_PLATFORMS") or environ.get("JAX_PLATFORM_NAME") or ""
    if platforms.strip():
        return platforms.split(",")[0].strip().lower() == "cpu"
    if importlib.metadata.entry_points(group="jax_plugins"):
        return False
    return all(importlib.util.find_spec(name) is None for name in ("jax_plugins", "libtpu"))


def _backend_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bridge is not None and bridge.backends_are_initialized()


def add_cpu_flags() -> None:
    """Adds CPU_FLAGS to XLA_FLAGS where JAX has not started yet and will run
    on the CPU (`import i3d_jax` calls it); nothing otherwise. Once per process."""
    global _user_value, _added, _at_start
    if _at_start is not None:
        return
    _user_value = os.environ.get("XLA_FLAGS")
    current = _user_value or ""
    _at_start = current
    if _backend_started() or not backend_will_be_cpu():
        return
    updated = with_cpu_flags(current)
    if updated != current.strip():
        os.environ["XLA_FLAGS"] = updated
        _added = tuple(updated[len(current.strip()):].split())
        _at_start = updated


def flags_at_start() -> str:
    """The XLA_FLAGS XLA's backend started with: what `add_cpu_flags` left
    (or, where it has not run, the variable as it is now)."""
    return os.environ.get("XLA_FLAGS", "") if _at_start is None else _at_start


def added_flags() -> tuple[str, ...]:
    """The flags `add_cpu_flags` added to XLA_FLAGS (none where it added none)."""
    return _added


def restore_environment() -> None:
    """XLA_FLAGS back to the user's own value, once XLA has read it (call after
    the backend started): child processes inherit nothing of ours."""
    if not _added or os.environ.get("XLA_FLAGS") != _at_start:
        return  # nothing added, or changed since by someone else: theirs now
    if _user_value is None:
        del os.environ["XLA_FLAGS"]
    else:
        os.environ["XLA_FLAGS"] = _user_value


def ynnpack_runs_convolutions(xla_flags: str) -> bool:
    """Whether XLA:CPU hands convolutions to YNNPACK, as it does by default
    (jaxlib 0.10.2), rather than running them with its own Eigen kernels, as
    it does once `xla_flags` sets YNN_FUSION_FLAG to a list of its own (e.g.
    "dot"; "+dot" or "-dot" edit the default list and keep the convolutions
    YNNPACK's)."""
    values = None
    for flag in xla_flags.split():
        name, _, value = flag.partition("=")
        if name == YNN_FUSION_FLAG:
            values = value.strip("'\"")  # the last one wins, as in XLA
    if values is None:
        return True
    types = [v for v in values.split(",") if v]
    if any(t[0] in "+-" for t in types):
        return True
    return any("conv" in t for t in types)
