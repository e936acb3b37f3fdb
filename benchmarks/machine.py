"""What a benchmark records about the machine it ran on, and how it times calls."""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def isa() -> list[str]:
    """The vector extensions that decide convolution speed on a CPU (from /proc/cpuinfo)."""
    from i3d_jax.kernels.host import cpu_flags

    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni",
              "amx_bf16", "amx_tile")
    flags = cpu_flags()
    return [f for f in wanted if f in flags]


def machine_record() -> dict:
    return {"cpu": cpu_model(), "isa": isa(), "cores_available": available_cores(),
            "platform": platform.platform()}


def time_calls(fn, iters: int) -> list[float]:
    """Seconds per call; fn must block until its result is ready."""
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times
