"""The `i3d-jax` program (and `python -m i3d_jax`): puts in place what the
process must have from its start, then runs the CLI (`i3d_jax.cli.main`).

What must be there from the start: transparent huge pages for the C
library's allocator. XLA:CPU allocates every step's activations and
gradients afresh, and glibc hands the large ones back to the kernel when
they are freed, so each step faults its memory in again 4 KiB at a time (a
Two-Stream train step on one 224x224 clip: 42,000 page faults; the
3D-ConvNet's on two 16x112x112 clips: 224,000). With
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` glibc asks for 2 MiB pages
(madvise), and the same steps fault 430 and 870 times. Measured on a 2-core
AMD EPYC VM (2026-12-03, `benchmarks/run.py`'s workers run alternately): the
Two-Stream train step 0.230-0.269 -> 0.180 s; PyTorch's torch.compile step
0.257-0.289 s with it or without it. glibc reads GLIBC_TUNABLES only as a
process starts, so the program sets it and runs itself again, once.
"""
from __future__ import annotations

import os
import sys

HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb"
HUGE_PAGES = f"{HUGE_PAGES_TUNABLE}=1"


def runs_on_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):
        return False  # not glibc (musl, macOS, Windows): nothing to set


def with_huge_pages(tunables: str) -> str | None:
    """GLIBC_TUNABLES' value `tunables` with HUGE_PAGES added, or None where it
    names HUGE_PAGES_TUNABLE already (whatever its value: the user's choice)."""
    names = {item.partition("=")[0] for item in tunables.split(":")}
    if HUGE_PAGES_TUNABLE in names:
        return None
    return ":".join(item for item in (tunables, HUGE_PAGES) if item)


def main() -> None:
    tunables = with_huge_pages(os.environ.get("GLIBC_TUNABLES", ""))
    if tunables is not None and runs_on_glibc() and sys.executable:
        os.environ["GLIBC_TUNABLES"] = tunables
        # The environment is now the one the program wants: this runs once.
        os.execv(sys.executable, [sys.executable, "-m", "i3d_jax", *sys.argv[1:]])
    from i3d_jax.cli import main as cli_main

    cli_main()
