"""host_memory.keep_freed_memory: freed heap memory stays in the process, so memory
used again does not fault in anew (each case in a fresh process: the setting is
process-wide)."""
import json
import os
import subprocess
import sys

import pytest

from i3d_jax import host_memory

# Allocates ROUNDS times BLOCKS blocks of 1 MiB, writes them, frees them all, and
# counts the minor page faults of every round after the first.
_ROUNDS = """
import ctypes, ctypes.util, json, resource, sys
from i3d_jax import host_memory
message = host_memory.keep_freed_memory() if sys.argv[1] == "keep" else ""
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size, blocks = 2**20, 48
libc.free(libc.malloc(size))  # lifts glibc's dynamic mmap threshold to 1 MiB
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    pointers = [libc.malloc(size) for _ in range(blocks)]
    for pointer in pointers:
        ctypes.memset(pointer, 1, size)
    for pointer in reversed(pointers):
        libc.free(pointer)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"message": message, "faults_after_first_round": faults[1:]}))
"""


def _rounds(mode):
    # glibc's defaults, not the huge-pages tunable conftest gives subprocesses.
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    output = subprocess.run([sys.executable, "-c", _ROUNDS, mode], check=True, env=env,
                            capture_output=True, text=True).stdout
    return json.loads(output.splitlines()[-1])


@pytest.mark.skipif(host_memory.glibc_version() is None, reason="mallopt is glibc's")
def test_freed_memory_is_reused_without_page_faults():
    pages = 48 * 2**20 // 4096  # what one round writes
    default, kept = _rounds("default"), _rounds("keep")
    # glibc by default trims the freed 48 MiB off its heap: every round faults it in.
    assert min(default["faults_after_first_round"]) > pages // 2, default
    assert max(kept["faults_after_first_round"]) < pages // 20, kept
    assert "kept for reuse" in kept["message"] and "32 MiB" in kept["message"]


def test_glibc_version_names_the_library_or_none():
    version = host_memory.glibc_version()
    if version is not None:
        major, minor = version.split(".")[:2]
        assert int(major) == 2 and int(minor) >= 17
    elif sys.platform.startswith("linux"):
        assert "not glibc" in host_memory.keep_freed_memory()
