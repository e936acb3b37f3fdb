"""bfloat16 on the CPU: where it is native, and the warning where it is not."""
from __future__ import annotations

import logging

import pytest

from i3d_jax import train
from i3d_jax.kernels import host

CPUINFO = """processor	: 0
vendor_id	: AuthenticAMD
flags		: fpu sse2 avx2 fma avx512f avx512_vnni
bugs		: sysret_ss_attrs

processor	: 1
flags		: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16
"""


def test_the_flags_are_the_first_processor_s():
    flags = host.parse_flags(CPUINFO)
    assert {"avx2", "avx512f", "avx512_vnni"} <= flags
    assert "avx512_bf16" not in flags and "sysret_ss_attrs" not in flags
    assert host.parse_flags("model name : something\n") == frozenset()


@pytest.mark.parametrize("flags,native", [
    ({"avx2", "fma"}, False),                      # the AVX2-only EPYC of issue 12
    ({"avx512f", "avx512_vnni"}, False),           # AVX-512 without its bf16 dot products
    ({"avx512f", "avx512_bf16"}, True),            # Zen 4, Cooper Lake
    ({"avx512f", "amx_tile", "amx_bf16"}, True),   # Sapphire Rapids
])
def test_native_bfloat16_needs_its_dot_products(flags, native):
    assert host.has_native_bf16(frozenset(flags)) is native
    warning = host.bf16_warning("cpu", frozenset(flags))
    assert (warning is None) is native
    if warning:
        assert "avx512_bf16" in warning and "float32" in warning
    assert host.bf16_warning("gpu", frozenset(flags)) is None


def test_this_machine_s_flags_are_read_from_proc_cpuinfo():
    with open("/proc/cpuinfo") as cpuinfo:
        assert host.cpu_flags() == host.parse_flags(cpuinfo.read())


@pytest.mark.parametrize("flags,dtype,platform,warned", [
    (frozenset({"avx2"}), "bfloat16", "cpu", True),
    (frozenset({"avx2"}), "float32", "cpu", False),
    (frozenset({"avx2"}), "bfloat16", "gpu", False),
    (frozenset({"avx512_bf16"}), "bfloat16", "cpu", False),
])
def test_training_in_emulated_bfloat16_is_not_silent(monkeypatch, caplog, flags, dtype, platform,
                                                     warned):
    monkeypatch.setattr(host, "cpu_flags", lambda: flags)
    with caplog.at_level(logging.WARNING):
        train.warn_if_emulated_bf16(dtype, platform)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == warned
    if warned:
        assert messages[0].startswith("config.dtype bfloat16 on a CPU without native bfloat16")
