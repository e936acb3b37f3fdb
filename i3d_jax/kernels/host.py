"""What the host CPU can do, as /proc/cpuinfo lists it: whether oneDNN may
take bfloat16 convolutions (`kernels/cpu`), and the warning for bfloat16 on
a CPU that has no bfloat16 arithmetic of its own. Plain text parsing, no
JAX: every backend may import it."""
from __future__ import annotations

import functools

# The flags that give a CPU bfloat16 dot products of its own: AVX-512's
# VDPBF16PS (Intel Cooper Lake and later, AMD Zen 4 and later) or AMX's tiles.
# Without them oneDNN and XLA emulate bfloat16 through float32 conversions,
# slower than float32 itself (docs/benchmarks.md).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def parse_flags(cpuinfo: str) -> frozenset[str]:
    """The `flags` of the first processor in a /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags; empty where /proc/cpuinfo cannot be read (not Linux)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return parse_flags(cpuinfo.read())
    except OSError:
        return frozenset()


def has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU (or `flags`) computes bfloat16 dot products natively."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def bf16_warning(platform: str, flags: frozenset[str] | None = None) -> str | None:
    """The warning for computing in bfloat16 on `platform`, or None where that
    is as intended: accelerators, and CPUs with NATIVE_BF16_FLAGS."""
    if platform != "cpu" or has_native_bf16(flags):
        return None
    return ("dtype bfloat16 on a CPU without native bfloat16 (none of "
            f"{', '.join(NATIVE_BF16_FLAGS)} in /proc/cpuinfo): it is emulated through "
            "float32 and runs slower than float32; dtype float32 is faster here")
