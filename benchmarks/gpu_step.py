"""I3D's train step and inference on one accelerator, ours against PyTorch measured
in the same run, and TV-L1 flow throughput: the GPU table of the README.

    python -m benchmarks.gpu_step --json OUT/gpu.json            # the GPU's table
    python -m benchmarks.gpu_step --frames 8 --size 32 --batches 2 --flow-size 32x40 \
        --json /tmp/gpu_smoke.json                              # a try-out on CPU

Imports nothing that needs TensorFlow, TFDS, PyAV or ml_collections (the GPU
machine has none of them): models, the train step and flow only. Inputs are made
on the device. Ours: bf16 compute with float32 master weights (`dtype`), SGD with
momentum, BatchNorm on batch statistics, the state donated. PyTorch: the same
I3D (benchmarks/torch_i3d.py), channels-last, bf16 autocast, SGD with momentum,
eager and torch.compile. MFU = XLA's FLOPs of our step / step time / the bf16
dense peak given by --peak-tflops (989 for an H100/H200 SXM by the datasheet).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.machine import machine_record, time_calls
from i3d_jax.models import build_model
from i3d_jax.train.step import StepFunctions, state_key

NUM_CLASSES = 400


def jax_train_step(batch: int, frames: int, size: int, dtype: str, repeats: int) -> dict:
    model = build_model("i3d", num_classes=NUM_CLASSES, dtype=jnp.dtype(dtype))
    schedule = optax.constant_schedule(0.1)
    device = jax.devices()[0]
    mesh = jax.make_mesh((1, 1), ("data", "fsdp"), devices=[device],
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    fns = StepFunctions(model=model, optimizer=optax.sgd(schedule, momentum=0.9),
                        schedule=schedule, stream_names=("rgb",), mesh=mesh, num_batch_groups=1)
    state = jax.jit(fns.init)(state_key(0), jnp.zeros((1, frames, size, size, 3)))
    key = jax.random.key(1)
    data = {"rgb": jax.random.uniform(key, (batch, frames, size, size, 3), jnp.float32, -1, 1),
            "label": jax.random.randint(key, (batch,), 0, NUM_CLASSES)}
    started = time.perf_counter()
    step = jax.jit(fns.train_step, donate_argnums=0).lower(state, data).compile()
    compile_s = time.perf_counter() - started
    cost = step.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    holder = {"state": state}

    def one():
        holder["state"], metrics = step(holder["state"], data)
        jax.block_until_ready(metrics["loss"])

    one()  # warm-up
    times = time_calls(one, repeats)
    median = statistics.median(times)
    return {"batch": batch, "dtype": dtype, "compile_s": round(compile_s, 1),
            "step_s": median, "clips_per_s": batch / median, "flops_per_step": float(cost["flops"])}


def jax_inference(batch: int, frames: int, size: int, dtype: str, repeats: int) -> dict:
    model = build_model("i3d", num_classes=NUM_CLASSES, dtype=jnp.dtype(dtype))
    clip = jax.random.uniform(jax.random.key(0), (batch, frames, size, size, 3), jnp.float32,
                              -1, 1)
    variables = jax.jit(lambda k: model.init(k, clip[:1], train=False))(jax.random.key(1))
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    jax.block_until_ready(apply(variables, clip))
    times = time_calls(lambda: jax.block_until_ready(apply(variables, clip)), repeats)
    return {"batch": batch, "dtype": dtype, "clips_per_s": batch / statistics.median(times)}


def torch_runs(batch: int, frames: int, size: int, repeats: int, compile_model: bool) -> dict:
    import torch

    from benchmarks.torch_i3d import InceptionI3d

    device = "cuda" if torch.cuda.is_available() else "cpu"
    autocast_dtype = torch.bfloat16
    model = InceptionI3d(NUM_CLASSES).to(device).to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    clip = (torch.rand(batch, 3, frames, size, size, device=device) * 2 - 1).to(
        memory_format=torch.channels_last_3d)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    forward = torch.compile(model) if compile_model else model

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def train_step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=autocast_dtype):
            logits, _ = forward(clip)
            loss = torch.nn.functional.cross_entropy(logits.mean(dim=2).float(), labels)
        loss.backward()
        optimizer.step()
        sync()

    def infer():
        model.eval()
        with torch.no_grad(), torch.autocast(device, dtype=autocast_dtype):
            forward(clip)
        sync()

    started = time.perf_counter()
    train_step()
    train_step()
    warm_s = time.perf_counter() - started
    train_times = time_calls(train_step, repeats)
    infer()
    infer()
    infer_times = time_calls(infer, repeats)
    return {"compile": compile_model, "device": device, "warm_up_s": round(warm_s, 1),
            "train_clips_per_s": batch / statistics.median(train_times),
            "inference_clips_per_s": batch / statistics.median(infer_times)}


def flow_throughput(height: int, width: int, pairs: int, repeats: int) -> dict:
    from i3d_jax import flow

    rng = np.random.default_rng(0)
    frames = rng.uniform(0, 255, (pairs + 1, height, width)).astype(np.float32)
    first = jnp.asarray(frames[:-1])
    second = jnp.asarray(frames[1:])
    jax.block_until_ready(flow.tvl1_pairs(first, second))  # compile (OpenCV's defaults)
    times = time_calls(lambda: jax.block_until_ready(flow.tvl1_pairs(first, second)), repeats)
    return {"size_hw": [height, width], "pairs": pairs,
            "pairs_per_s": pairs / statistics.median(times)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", default="8,16,32", help="train batches to try, ascending")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--flow-size", default="256x340")
    parser.add_argument("--flow-pairs", type=int, default=64)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    record = {"device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
              "machine": machine_record(), "clip": f"{args.frames}x{args.size}x{args.size}",
              "train": [], "torch": [], "peak_tflops": args.peak_tflops}

    def save():
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")

    for batch in (int(b) for b in args.batches.split(",")):
        try:
            result = jax_train_step(batch, args.frames, args.size, args.dtype, args.repeats)
        except jax.errors.JaxRuntimeError as e:  # out of memory: the last batch was the largest
            record["train"].append({"batch": batch, "error": str(e).splitlines()[0][:300]})
            break
        result["mfu"] = result["flops_per_step"] / result["step_s"] / (args.peak_tflops * 1e12)
        record["train"].append(result)
        print(json.dumps(result), file=sys.stderr)
        save()
    fitted = [r for r in record["train"] if "error" not in r]
    if not fitted:
        save()
        return 1
    batch = fitted[-1]["batch"]
    record["inference"] = jax_inference(batch, args.frames, args.size, args.dtype, args.repeats)
    save()
    if not args.skip_torch:
        for compile_model in (False, True):
            try:
                record["torch"].append(torch_runs(batch, args.frames, args.size, args.repeats,
                                                  compile_model))
            except Exception as e:  # a peer that fails is recorded, not fatal
                record["torch"].append({"compile": compile_model, "error": repr(e)[:300]})
            print(json.dumps(record["torch"][-1]), file=sys.stderr)
            save()
    height, width = (int(v) for v in args.flow_size.split("x"))
    record["flow"] = flow_throughput(height, width, args.flow_pairs, max(2, args.repeats // 2))
    save()
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
