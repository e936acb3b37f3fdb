"""Which gradient form of the CPU kernels is faster, with and without the
XLA:CPU flag that `import i3d_jax` adds: the measurements behind
`i3d_jax.kernels.cpu.gradient_form`.

    python -m benchmarks.gradient_forms [--iters 3] [--json FILE]

For each XLA_FLAGS setting (the library's `...ynn_fusion_type=dot`, under
which XLA:CPU runs convolutions with its own Eigen kernels, and `=+dot`,
which names the flag, so the library adds nothing, and keeps XLA's default
of YNNPACK convolutions) and each gradient form ("matrix_products",
"lax"), one process times I3D's float32 SGD train step on one 64x224x224
clip (BatchNorm on batch statistics) with oneDNN's forward convolutions:
the median of `--iters` steps after one warm-up, and which form "auto"
picks there. The CPU and its ISA are recorded with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.machine import machine_record, time_calls  # noqa: E402

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
SETTINGS = {"with the flag (Eigen convolutions)": f"{FLAG}=dot",
            "without it (YNNPACK convolutions)": f"{FLAG}=+dot"}
FORMS = ("matrix_products", "lax")


def worker(form: str, iters: int, frames: int, size: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from i3d_jax.kernels import choose_kernels, xla_flags
    from i3d_jax.kernels.cpu import make_kernels
    from i3d_jax.models import build_model
    from i3d_jax.train.step import StepFunctions, state_key

    model = build_model("i3d", num_classes=400, kernels=make_kernels("onednn", form))
    schedule = optax.constant_schedule(0.01)
    mesh = jax.make_mesh((1, 1), ("data", "fsdp"), devices=jax.devices()[:1],
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    fns = StepFunctions(model=model, optimizer=optax.sgd(schedule, momentum=0.9),
                        schedule=schedule, stream_names=("rgb",), mesh=mesh)
    clip = np.random.default_rng(0).uniform(-1, 1, (1, frames, size, size, 3)).astype(np.float32)
    data = {"rgb": jnp.asarray(clip), "label": jnp.zeros((1,), jnp.int32)}
    state = jax.jit(fns.init)(state_key(0), data["rgb"])
    started = time.perf_counter()
    step = jax.jit(fns.train_step, donate_argnums=0).lower(state, data).compile()
    compile_s = time.perf_counter() - started
    holder = {"state": state}

    def one():
        holder["state"], metrics = step(holder["state"], data)
        jax.block_until_ready(metrics["loss"])

    one()
    times = time_calls(one, iters)
    return {"seconds": statistics.median(times), "all_seconds": times, "compile_s": compile_s,
            "auto_picks": choose_kernels("auto").description,
            "xla_flags_at_start": xla_flags.flags_at_start()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", choices=FORMS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.iters, args.frames, args.size)))
        return 0
    record = {"command": "python -m benchmarks.gradient_forms " + " ".join(argv or sys.argv[1:]),
              "machine": machine_record(), "clip": f"1x{args.frames}x{args.size}x{args.size}",
              "cells": []}
    for setting, flags in SETTINGS.items():
        for form in FORMS:
            env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()}
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.gradient_forms", "--worker", form,
                 "--iters", str(args.iters), "--frames", str(args.frames), "--size",
                 str(args.size)], cwd=REPO, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{setting}, {form}: {done.stderr[-2000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            record["cells"].append({"setting": setting, "xla_flags": flags, "form": form,
                                    **result})
            print(f"{setting:36s} {form:16s} {result['seconds']:.3f} s  "
                  f"(auto: {result['auto_picks']})", flush=True)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(record, indent=1))
    m = record["machine"]
    print(f"{m['cpu']} ({', '.join(m['isa'])}), {m['cores_available']} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
