"""The figures docs/scaling.md is built from: parameters, FLOPs of one training
clip from XLA's cost analysis of the real train step, and the bytes a step moves
between devices, for a model at the paper's input.

    python -m benchmarks.scaling [--arch i3d] [--streams rgb] [--frames 64] [--size 224]
                                 [--json benchmarks/results/scaling.json]

Compiled, not run: any machine gives the same counts (the CPU here in about a
minute for I3D at 64x224x224). FLOPs are XLA's (a multiply-add is 2), counted on
lax's native convolution.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from benchmarks.machine import machine_record
from i3d_jax.models import build_model
from i3d_jax.models.stats import count_params, forward_flops
from i3d_jax.streams import STREAM_CHANNELS
from i3d_jax.train.step import StepFunctions, state_key


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost["flops"])


def measure(architecture: str, streams: tuple[str, ...], frames: int, size: int,
            num_classes: int = 400) -> dict:
    model = build_model(architecture, num_classes=num_classes, kernels="xla")
    inputs = {s: jax.ShapeDtypeStruct((1, frames, size, size, STREAM_CHANNELS[s]), jnp.float32)
              for s in streams}
    model_input = inputs[streams[0]] if len(streams) == 1 else inputs
    schedule = optax.constant_schedule(0.1)
    mesh = jax.make_mesh((1, 1), ("data", "fsdp"), devices=jax.devices()[:1],
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    fns = StepFunctions(model=model, optimizer=optax.sgd(schedule, momentum=0.9),
                        schedule=schedule, stream_names=streams, mesh=mesh, num_batch_groups=1)
    started = time.perf_counter()
    abstract_state = jax.eval_shape(fns.init, state_key(0), model_input)
    params = count_params({"params": abstract_state.params})
    batch = {**inputs, "label": jax.ShapeDtypeStruct((1,), jnp.int32)}
    compiled_step = jax.jit(fns.train_step).lower(abstract_state, batch).compile()
    train_flops = _flops(compiled_step)
    memory = compiled_step.memory_analysis()
    variables = {"params": abstract_state.params, "batch_stats": abstract_state.batch_stats}
    inference_flops = forward_flops(model, variables, model_input)
    return {
        "architecture": architecture, "streams": list(streams),
        "clip": f"{frames}x{size}x{size}", "num_classes": num_classes,
        "params": params, "param_bytes_float32": 4 * params,
        "inference_flops_per_clip": inference_flops,
        "train_step_flops_per_clip": train_flops,
        "train_over_inference": train_flops / inference_flops,
        # XLA's buffer plan for one clip on this backend: the activations the
        # backward pass keeps dominate it (indicative for other backends).
        "train_step_temp_bytes_per_clip": getattr(memory, "temp_size_in_bytes", None),
        "compile_s": round(time.perf_counter() - started, 1),
    }


def communication_bytes(param_bytes: float, devices: int, fsdp: bool) -> dict:
    """Bytes each device sends per step with ring collectives over `devices`.
    Data parallel: one all-reduce of the gradients, 2 (n-1)/n of their bytes.
    FSDP: the parameters all-gathered for the forward and again for the backward,
    the gradients reduce-scattered, (n-1)/n each."""
    share = (devices - 1) / devices
    if fsdp:
        return {"all_gather": 2 * share * param_bytes, "reduce_scatter": share * param_bytes,
                "total": 3 * share * param_bytes}
    return {"all_reduce": 2 * share * param_bytes, "total": 2 * share * param_bytes}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="i3d")
    parser.add_argument("--streams", default="rgb", help="comma-separated: rgb, flow, rgb,flow")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    streams = tuple(args.streams.split(","))
    print(f"compiling the {args.arch} train step for one {args.frames}x{args.size}x{args.size} "
          f"clip ({'+'.join(streams)}) to count its FLOPs...", file=sys.stderr)
    record = measure(args.arch, streams, args.frames, args.size)
    record["communication_bytes_per_device_per_step"] = {
        f"{kind}_{n}_devices": communication_bytes(record["param_bytes_float32"], n, kind == "fsdp")
        for kind in ("data", "fsdp") for n in (8, 64)}
    record["machine"] = machine_record()
    record["versions"] = {"jax": jax.__version__}
    text = json.dumps(record, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
