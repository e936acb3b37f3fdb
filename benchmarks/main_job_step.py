"""The main job's train step timed alone: the model, optimizer, batch and clip
of `experiments/default.py` (I3D at quarter width, AdamW, 16 clips of
16x56x56), on random clips, one JAX CPU device.

    python -m benchmarks.main_job_step [--steps 10]

Prints the compile time, how many of the step's convolutions are oneDNN's
custom call, and the median step time after two warm-up steps. The whole
main job (data generation, evaluation, checkpoints) is `i3d-jax train`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

NUM_CLASSES = 10  # synthetic_motion's


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median)")
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.machine import machine_record
    from experiments.default import get_config
    from i3d_jax.models import build_model
    from i3d_jax.train import StepFunctions, make_optimizer, make_schedule, model_fields, state_key

    config = get_config()
    mesh = jax.make_mesh((1, 1), ("data", "fsdp"), devices=jax.devices()[:1],
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    model = build_model(config.model.architecture, **model_fields(config, NUM_CLASSES))
    schedule = make_schedule(config)
    fns = StepFunctions(model=model, optimizer=make_optimizer(config, schedule),
                        schedule=schedule, stream_names=("rgb",), mesh=mesh)
    shape = (config.batch_size, config.input.rgb.num_frames, config.input.crop_size,
             config.input.crop_size, 3)
    clips = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32))
    data = {"rgb": clips, "label": jnp.arange(shape[0]) % NUM_CLASSES}
    state = jax.jit(fns.init)(state_key(0), clips[:1])
    started = time.perf_counter()
    step = jax.jit(fns.train_step, donate_argnums=0).lower(state, data).compile()
    compile_s = time.perf_counter() - started
    times = []
    for _ in range(args.steps + 2):
        started = time.perf_counter()
        state, metrics = step(state, data)
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - started)
    print(machine_record())
    print(f"main job step ({config.model.architecture} x{config.model.width_multiplier}, "
          f"{shape[0]} x {shape[1]}x{shape[2]}x{shape[3]}): compile {compile_s:.1f} s, "
          f"{step.as_text().count('__onednn$convolution')} oneDNN convolutions, "
          f"median of {args.steps} steps {statistics.median(times[2:]):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
