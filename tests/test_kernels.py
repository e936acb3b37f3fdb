"""How the kernels are chosen: once per process, before tracing, from the
backend, the jaxlib and oneDNN's self-check; the XLA:CPU flags put in place
before JAX starts and taken back from the environment after; and where the
CPU-only machinery may live in the package."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from i3d_jax import kernels
from i3d_jax.kernels import XLA, choose_kernels, xla_flags
from i3d_jax.kernels.cpu import gradient_form, make_kernels, onednn

PACKAGE = Path(__file__).resolve().parents[1] / "i3d_jax"
DOT = "--xla_cpu_experimental_ynn_fusion_type=dot"
# choose_kernels without its once-per-process cache: each test decides anew.
choose = choose_kernels.__wrapped__


def test_xla_is_xla_on_every_backend():
    assert choose("xla") is XLA


def test_auto_is_the_cpu_kernels_on_the_cpu_with_the_tested_jaxlib(caplog):
    with caplog.at_level(logging.INFO, logger="i3d_jax.kernels"):
        chosen = choose("auto")
    # Read before choosing again: the CLI's main leaves this logger at INFO.
    lines = [r.getMessage() for r in caplog.records if r.name == "i3d_jax.kernels"]
    assert chosen.name == "cpu" and chosen is choose("cpu")
    assert chosen is make_kernels("onednn", gradient_form(xla_flags.flags_at_start()))
    assert len(lines) == 1 and lines[0].startswith("kernels: cpu (oneDNN's self-check passed: ")


def test_an_untested_jaxlib_falls_back_to_xla_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(kernels, "jaxlib_version", lambda: "0.99.0")
    with caplog.at_level(logging.INFO, logger="i3d_jax.kernels"):
        assert choose("auto") is XLA
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["kernels: the CPU kernels were tested with jaxlib 0.10.2, this is 0.99.0; "
                        "using XLA's own (kernels 'cpu' forces them)"]


def test_accelerators_get_xla_and_refuse_the_cpu_kernels(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert choose("auto") is XLA
    with pytest.raises(ValueError, match="kernels 'cpu' run on JAX's CPU backend only; this "
                                         "process runs on 'gpu'"):
        choose("cpu")


def test_a_failed_onednn_self_check_means_xla_for_auto_and_stacked_taps_for_cpu(monkeypatch):
    monkeypatch.setattr(onednn, "available", lambda dtype="float32": False)
    assert choose("auto") is XLA
    assert choose("cpu").description.startswith("stacked-taps forward convolutions")


def test_an_unknown_name_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="kernels 'onednn' is not one of auto, xla, cpu"):
        choose("onednn")


@pytest.mark.parametrize("environ, cpu", [
    ({"JAX_PLATFORMS": "cpu"}, True),
    ({"JAX_PLATFORMS": "CPU,cuda"}, True),
    ({"JAX_PLATFORMS": "cuda,cpu"}, False),
    ({"JAX_PLATFORMS": "tpu"}, False),
    ({"JAX_PLATFORM_NAME": "gpu"}, False),
])
def test_the_backend_is_judged_before_jax_starts(environ, cpu):
    assert xla_flags.backend_will_be_cpu(environ) is cpu


def test_the_cpu_flags_are_added_unless_xla_flags_names_them():
    assert xla_flags.with_cpu_flags("") == DOT
    assert xla_flags.with_cpu_flags(" --xla_force_host_platform_device_count=8 ") == \
        f"--xla_force_host_platform_device_count=8 {DOT}"
    # The user's own value, an empty list included, is kept as it is.
    for theirs in ("--xla_cpu_experimental_ynn_fusion_type=individual_dot",
                   "--xla_cpu_experimental_ynn_fusion_type="):
        assert xla_flags.with_cpu_flags(theirs) == theirs


def _python(code: str, **env) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**environ, **env}, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_a_script_starts_xla_with_the_flags_and_leaves_the_environment_as_it_was():
    out = _python(
        "import os, jax, jax.numpy as jnp\n"
        "import i3d_jax\n"
        "print(os.environ['XLA_FLAGS'])\n"
        "from i3d_jax.models import build_model\n"
        "model = build_model('i3d', num_classes=3, width_multiplier=1 / 16)\n"
        "print(model.kernels.description)\n"
        "print(os.environ['XLA_FLAGS'])\n",
        JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")
    added, description, after = out.splitlines()
    assert added == f"--xla_backend_optimization_level=0 {DOT}"
    # XLA started with the flag: the gradient form is the one for Eigen's convolutions.
    assert description == "oneDNN forward convolutions, lax kernel gradients"
    assert after == "--xla_backend_optimization_level=0"  # for the processes it starts


@pytest.mark.slow
def test_no_flag_is_added_where_the_backend_will_not_be_the_cpu():
    out = _python("import os, i3d_jax\nprint(os.environ.get('XLA_FLAGS'))\n", JAX_PLATFORMS="tpu")
    assert out.strip() == "None"


def test_only_the_kernels_reach_into_jax_internals_and_nothing_restarts_the_process():
    private, restarts, long_modules = [], [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        relative = path.relative_to(PACKAGE.parent)
        if "jax._src" in text and relative.parts[1] != "kernels":
            private.append(str(relative))
        if "execv" in text:
            restarts.append(str(relative))
        if text.count("\n") > 600:
            long_modules.append(str(relative))
    assert private == [] and restarts == []
    assert long_modules == []  # each module readable in one sitting
