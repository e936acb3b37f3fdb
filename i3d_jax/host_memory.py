"""How the host process hands freed memory back to the system, for the input
pipeline's sake.

tf.data allocates every decoded frame (150-175 KB) and every clip (9.6 MB for
64x224x224x3 uint8) afresh. glibc's malloc serves blocks above its mmap threshold
(128 KiB at start, rising with what is freed, to at most 32 MiB) straight from the
kernel and unmaps them when freed, and it returns the top of its heaps to the
kernel once more than its trim threshold lies free there. Either way the next
clip's pages are new to the process, and each 4 KiB of them costs a page fault and
a zeroing before the decoder writes it: on the 2-core Xeon of docs/data.md, 1,300 to
4,000 minor faults a clip, 10-15% of the pipeline's time. `keep_freed_memory`
fixes both thresholds, so freed blocks stay in the heap and the next clip reuses
them (under 100 faults a clip).

The setting is the whole process's and lasts until it exits; it holds at most
`trim_threshold` of freed memory per malloc arena beyond what a process keeps
anyway. Only glibc has it: elsewhere the call does nothing and says so.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc accepts on 64-bit hosts (HEAP_MAX_SIZE / 2).
MAX_MMAP_THRESHOLD = 32 * 2**20
DEFAULT_TRIM_THRESHOLD = 256 * 2**20


def glibc_version() -> str | None:
    """'2.36' where the process runs on glibc, else None (musl, macOS, Windows)."""
    try:
        name = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"
    except (AttributeError, ValueError, OSError):
        return None
    if not name or not name.startswith("glibc "):
        return None
    return name.split()[1]


def keep_freed_memory(trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> str:
    """Keeps blocks up to 32 MiB and up to `trim_threshold` bytes of free heap top in
    the process for reuse instead of returning them to the kernel. Returns what it
    did, in words, for the log."""
    version = glibc_version()
    if version is None:
        return "host memory: left to the system's allocator (not glibc: no mallopt)"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # mallopt returns 1 on success, 0 for a value glibc refuses.
    if not (libc.mallopt(_M_MMAP_THRESHOLD, MAX_MMAP_THRESHOLD)
            and libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold))):
        raise RuntimeError(f"glibc {version} refused mallopt(mmap threshold "
                           f"{MAX_MMAP_THRESHOLD}, trim threshold {trim_threshold})")
    return (f"host memory: freed blocks kept for reuse (glibc {version}: mmap threshold "
            f"{MAX_MMAP_THRESHOLD >> 20} MiB, trim threshold {int(trim_threshold) >> 20} MiB)")
