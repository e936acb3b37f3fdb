"""CPU speed of every architecture, this project (JAX) against the same network
in PyTorch (eager and torch.compile), measured side by side in one run.

    python -m benchmarks.run [--arch all] [--what train,inference] [--json FILE]

For each architecture, at the paper's training input (one clip a call; two
for the 3D-ConvNet, see --batch):
clips/s of inference and of a train step (SGD with momentum, BatchNorm on
batch statistics, cross-entropy on the logits), ours and each PyTorch
variant, the ratio pair by pair, compile time, peak resident memory, FLOPs
per step (XLA's cost analysis of lax's native convolutions: what the
network computes, not our CPU rewrite's extra padding taps) and the share
of the CPU's peak those FLOPs reach, with the CPU model and ISA. Float32,
and bfloat16 where the CPU computes it natively (`--dtypes`, default
"auto"; ours: bfloat16 computation with float32 parameters, the models'
`dtype`; PyTorch: `torch.autocast` to bfloat16).

Before anything is timed, the PyTorch network (`benchmarks/torch_models.py`)
is given our weights (random, BatchNorm statistics included) and must give
our logits on the benchmark's input to 1e-4 of their scale; a mismatch stops
the run. Each framework then runs in its own process (so peak memory is its
own), with every core: XLA's CPU client uses all of them, PyTorch is set to
as many intra-op threads.

The CPU's peak: cores x clock (the first `cpu MHz` of /proc/cpuinfo) x
FP32 FLOPs per cycle per core: 64 where the CPU has AVX-512 (two 512-bit
FMA units, as Zen 5 and Intel's server cores), else 32 (two 256-bit FMA
pipes, Zen 2-3); `--flops-per-cycle` for others (Zen 4 does AVX-512 in two
256-bit halves: 32). The bfloat16 peak is twice that: AVX-512's VDPBF16PS
does two bfloat16 multiply-adds per float32 lane (AMX's tiles, where there
are some, go further and are not counted).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.machine import available_cores, machine_record, time_calls  # noqa: E402
from i3d_jax.kernels import host  # noqa: E402

ARCHITECTURES = ("i3d", "convnet_lstm", "conv3d", "two_stream", "two_stream_fused",
                 "two_stream_i3d")
PEERS = ("torch_eager", "torch_compile")
NUM_CLASSES = 400
# Architectures whose PyTorch version runs 3D convolutions: channels-last-3d
# is oneDNN's fast layout for those; the 2D trunks get NCDHW clips and
# reshape them to images per frame.
CHANNELS_LAST_3D = ("i3d", "conv3d", "two_stream_i3d")
DTYPES = ("float32", "bfloat16")
# FLOPs per cycle of bfloat16 against float32 (VDPBF16PS: two products a lane).
BF16_PEAK_FACTOR = 2


def dtypes_for(requested: str, flags: frozenset[str] | None = None) -> tuple[list[str], str | None]:
    """(the dtypes to measure, a warning or None): "auto" is float32, and
    bfloat16 where the CPU has it natively; a bfloat16 asked for by name on a
    CPU without it is measured, with the warning saying so."""
    if requested == "auto":
        native = host.has_native_bf16(flags)
        return ["float32", *(["bfloat16"] if native else [])], None
    dtypes = [d for d in requested.split(",") if d]
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown or not dtypes:
        raise ValueError(f"--dtypes: {unknown or requested!r} not in {DTYPES} (or 'auto')")
    warning = host.bf16_warning("cpu", flags) if "bfloat16" in dtypes else None
    return dtypes, warning


def batch_for(arch: str, batch: int | None) -> int:
    return batch if batch is not None else (2 if arch == "conv3d" else 1)


def input_shapes(arch: str, batch: int) -> dict:
    """{stream: [B, T, H, W, C]} at the paper's training input."""
    from i3d_jax.models import PAPER_TRAIN_INPUTS

    shapes = PAPER_TRAIN_INPUTS[arch]
    if not isinstance(shapes, dict):
        shapes = {"rgb": shapes}
    return {stream: (batch, *shape) for stream, shape in shapes.items()}


def model_fields(arch: str, shapes: dict) -> dict:
    return {"clip_shape": shapes["rgb"][1:4]} if arch == "conv3d" else {}


def example_inputs(shapes: dict, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {s: rng.uniform(-1, 1, shape).astype(np.float32) for s, shape in shapes.items()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def cpu_peak_gflops(flops_per_cycle: int) -> tuple[float, str]:
    mhz = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":", 1)[1])
                break
    except OSError:
        pass
    if mhz is None:
        return float("nan"), "clock unknown"
    cores = available_cores()
    return (cores * mhz * 1e6 * flops_per_cycle / 1e9,
            f"{cores} cores x {mhz:.0f} MHz x {flops_per_cycle} FP32 FLOP/cycle")


# --- ours ---------------------------------------------------------------------------------

def _jax_model(arch, shapes, kernels="auto", width_multiplier=1.0, dtype="float32"):
    import jax.numpy as jnp

    from i3d_jax.models import build_model

    return build_model(arch, num_classes=NUM_CLASSES, kernels=kernels,
                       width_multiplier=width_multiplier, dtype=jnp.dtype(dtype),
                       **model_fields(arch, shapes))


def _jax_inputs(arrays):
    return arrays if len(arrays) > 1 else arrays["rgb"]


def _cost_flops(lowered) -> float:
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def jax_worker(arch: str, shapes: dict, what: list[str], iters: int,
               dtype: str = "float32") -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    from i3d_jax.train.step import StepFunctions, state_key

    arrays = {s: jnp.asarray(a) for s, a in example_inputs(shapes).items()}
    batch = next(iter(shapes.values()))[0]
    labels = jnp.arange(batch) % NUM_CLASSES
    results = {}
    mesh = jax.make_mesh((1, 1), ("data", "fsdp"), devices=jax.devices()[:1],
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)

    def step_functions(model):
        schedule = optax.constant_schedule(0.01)
        return StepFunctions(model=model, optimizer=optax.sgd(schedule, momentum=0.9),
                             schedule=schedule, stream_names=tuple(shapes), mesh=mesh)

    model = _jax_model(arch, shapes, dtype=dtype)
    from i3d_jax.kernels import xla_flags

    # What the library chose for this process, as a script of a user's gets it.
    results["kernels"] = f"{model.kernels.name}: {model.kernels.description}"
    results["xla_flags_at_start"] = xla_flags.flags_at_start()
    fns = step_functions(model)
    state = jax.jit(fns.init)(state_key(0), _jax_inputs({s: a[:1] for s, a in arrays.items()}))
    if "inference" in what:
        apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        started = time.perf_counter()
        compiled = apply.lower(variables, _jax_inputs(arrays)).compile()
        compile_s = time.perf_counter() - started
        native = _jax_model(arch, shapes, "xla", dtype=dtype)
        flops = _cost_flops(jax.jit(lambda v, x: native.apply(v, x, train=False)).lower(
            variables, _jax_inputs(arrays)))
        run = lambda: jax.block_until_ready(compiled(variables, _jax_inputs(arrays)))  # noqa: E731
        run()
        times = time_calls(run, iters)
        results["inference"] = {"compile_s": compile_s, "seconds": statistics.median(times),
                                "flops": flops}
    if "train" in what:
        data = {**arrays, "label": labels}
        started = time.perf_counter()
        step = jax.jit(fns.train_step, donate_argnums=0).lower(state, data).compile()
        compile_s = time.perf_counter() - started
        flops = _cost_flops(jax.jit(step_functions(_jax_model(arch, shapes, "xla", dtype=dtype))
                                    .train_step)
                            .lower(state, data))
        holder = {"state": state}

        def one():
            holder["state"], metrics = step(holder["state"], data)
            jax.block_until_ready(metrics["loss"])

        one()
        times = time_calls(one, iters)
        results["train"] = {"compile_s": compile_s, "seconds": statistics.median(times),
                            "flops": flops}
    return results


# --- PyTorch ------------------------------------------------------------------------------

def _torch_inputs(arch, arrays, torch):
    tensors = [torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 1))) for a in arrays.values()]
    if arch in CHANNELS_LAST_3D:
        tensors = [t.to(memory_format=torch.channels_last_3d) for t in tensors]
    return tensors


def torch_model(arch, shapes, torch, width_multiplier=1.0):
    from benchmarks import torch_models

    model = torch_models.build(arch, NUM_CLASSES, width_multiplier, **model_fields(arch, shapes))
    if arch in CHANNELS_LAST_3D:
        model = model.to(memory_format=torch.channels_last_3d)
    return model


def torch_worker(arch: str, shapes: dict, what: list[str], iters: int, compile_model: bool,
                 dtype: str = "float32") -> dict:
    import contextlib

    import torch

    torch.set_num_threads(available_cores())
    torch.manual_seed(0)
    model = torch_model(arch, shapes, torch)
    inputs = _torch_inputs(arch, example_inputs(shapes), torch)
    batch = inputs[0].shape[0]
    labels = torch.arange(batch) % NUM_CLASSES
    forward = torch.compile(model) if compile_model else model
    # bfloat16: autocast's, with float32 parameters and optimizer, as ours.
    precision = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bfloat16" \
        else contextlib.nullcontext
    results = {}
    if "inference" in what:
        model.eval()

        def infer():
            with torch.no_grad(), precision():
                forward(*inputs)

        started = time.perf_counter()
        infer()
        compile_s = time.perf_counter() - started
        times = time_calls(infer, iters)
        results["inference"] = {"compile_s": compile_s, "seconds": statistics.median(times)}
    if "train" in what:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with precision():
                logits = forward(*inputs)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            loss.backward()
            optimizer.step()

        started = time.perf_counter()
        step()
        compile_s = time.perf_counter() - started
        step()
        times = time_calls(step, iters)
        results["train"] = {"compile_s": compile_s, "seconds": statistics.median(times)}
    return results


# --- the check: same weights, same logits -------------------------------------------------

def perturbed_variables(model, arrays, seed: int = 0):
    """Our variables with noise on every parameter, BatchNorm means in
    [-0.3, 0.3] and variances in [0.5, 1.5]: a zero-initialised classifier or
    BatchNorm's initial (0, 1) would hide a wrong mapping."""
    import jax

    inputs = _jax_inputs({s: a[:1] for s, a in arrays.items()})
    variables = jax.jit(lambda key: model.init(key, inputs, train=False))(jax.random.key(seed))
    key = iter(jax.random.split(jax.random.key(seed + 1), 10_000))

    def noisy(path, leaf):
        name = path[-1].key
        if name == "var":
            return jax.random.uniform(next(key), leaf.shape, minval=0.5, maxval=1.5)
        if name == "mean":
            return jax.random.uniform(next(key), leaf.shape, minval=-0.3, maxval=0.3)
        return leaf + 0.05 * jax.random.normal(next(key), leaf.shape)

    return jax.tree_util.tree_map_with_path(noisy, dict(variables))


def reference_logits(arch: str, shapes: dict, width_multiplier: float = 1.0,
                     dtypes: tuple[str, ...] = ("float32",)):
    """(variables, inputs, our logits) on perturbed weights, in eval mode; with
    several `dtypes`, {dtype: logits} (float32) computed in each."""
    import jax

    arrays = example_inputs(shapes, seed=1)
    # One set of variables: the parameters are float32 in every dtype.
    variables = perturbed_variables(_jax_model(arch, shapes, width_multiplier=width_multiplier),
                                    arrays)
    logits = {}
    for dtype in dtypes:
        model = _jax_model(arch, shapes, width_multiplier=width_multiplier, dtype=dtype)
        logits[dtype] = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(
            variables, _jax_inputs(arrays)), np.float32)
    return (jax.tree.map(np.asarray, variables), arrays,
            logits if len(dtypes) > 1 else logits[dtypes[0]])


def peer_logits(arch: str, shapes: dict, variables, arrays, width_multiplier: float = 1.0,
                dtype: str = "float32"):
    """The PyTorch network's logits (float32) on our `variables` and `arrays`,
    computed in `dtype` (bfloat16: the benchmark's autocast)."""
    import torch

    from benchmarks import torch_models

    peer = torch_model(arch, shapes, torch, width_multiplier).eval()
    torch_models.load_flax_variables(peer, variables)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=dtype == "bfloat16"):
        return peer(*_torch_inputs(arch, arrays, torch)).float().numpy()


def _save_tree(path: Path, tree: dict) -> None:
    flat = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, prefix + (key,))
            else:
                flat["/".join(prefix + (key,))] = np.asarray(value)

    walk(tree, ())
    np.savez(path, **flat)


def _load_tree(path: Path) -> dict:
    tree = {}
    with np.load(path) as data:
        for name in data.files:
            node = tree
            *parents, leaf = name.split("/")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = data[name]
    return tree


def check_peer(arch: str, args, tolerance: float = 1e-4) -> dict:
    """Ours and the PyTorch network on the same weights and input (batch 1), each
    in its own process through an .npz; stops the run if they differ."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        exchange = Path(tmp) / "check.npz"
        for kind in ("jax_reference", "torch_check"):
            command = [sys.executable, "-m", "benchmarks.run", "--worker", kind, "--arch", arch,
                       "--exchange", str(exchange)]
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                                  timeout=args.worker_timeout, env=worker_env(args))
            if done.returncode != 0:
                raise SystemExit(f"{arch}: the output check ({kind}) failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["max_abs_difference"] <= tolerance * result["logit_scale"]:
        raise SystemExit(f"{arch}: the PyTorch network's logits differ from ours by "
                         f"{result['max_abs_difference']:.3g} (scale {result['logit_scale']:.3g}); "
                         "nothing timed")
    return result


def check_worker(kind: str, arch: str, exchange: Path) -> dict:
    shapes = input_shapes(arch, 1)
    if kind == "jax_reference":
        variables, arrays, logits = reference_logits(arch, shapes)
        _save_tree(exchange, {"variables": variables, "inputs": arrays, "logits": logits})
        return {}
    saved = _load_tree(exchange)
    theirs = peer_logits(arch, shapes, saved["variables"], saved["inputs"])
    ours = saved["logits"]
    return {"max_abs_difference": float(np.abs(ours - theirs).max()),
            "logit_scale": float(np.abs(ours).max())}


# --- the parent: one process per framework, the table -------------------------------------

# glibc's allocator hands XLA's and PyTorch's large buffers 2 MiB pages with
# this (docs/benchmarks.md: "Huge pages"); both frameworks' workers get the
# same GLIBC_TUNABLES, this by default.
HUGE_PAGES = "glibc.malloc.hugetlb=1"


def worker_env(args) -> dict:
    """Every worker's environment: XLA_FLAGS plus `--xla-flags` (JAX's only; by
    default nothing: the library's own choice, as a user's script gets it), and
    GLIBC_TUNABLES set to `--glibc-tunables` for both frameworks alike."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
    env["GLIBC_TUNABLES"] = args.glibc_tunables
    return env


def run_worker(kind: str, arch: str, args, dtype: str = "float32") -> dict:
    command = [sys.executable, "-m", "benchmarks.run", "--worker", kind, "--arch", arch,
               "--what", ",".join(args.what), "--iters", str(args.iters),
               "--batch", str(batch_for(arch, args.batch)), "--dtypes", dtype]
    started = time.perf_counter()
    print(f"[{arch} {dtype}] {kind} ...", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          timeout=args.worker_timeout, env=worker_env(args))
    if done.returncode != 0:
        error = ((done.stderr or done.stdout).strip().splitlines() or [f"exit {done.returncode}"])[-1]
        print(f"[{arch} {dtype}] {kind} failed: {error}", file=sys.stderr, flush=True)
        return {"error": error}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"[{arch} {dtype}] {kind} done in {time.perf_counter() - started:.0f} s",
          file=sys.stderr, flush=True)
    return result


def markdown(rows: list[dict], what: list[str]) -> str:
    """One line per architecture, dtype and part: clips/s and ratios, then the
    cost of each side: compile seconds (ours: XLA's compile; torch.compile:
    its first call, which compiles), peak resident MB of each framework's
    process, and the FLOPs and share of the CPU's peak of ours."""
    lines = ["| architecture | input (batch) | dtype | what | ours clips/s | torch eager | torch.compile | "
             "ours / eager | ours / compile | ours compile s | torch.compile compile s | "
             "ours peak MB | eager peak MB | torch.compile peak MB | GFLOP/clip | ours % of peak |",
             "| " + " | ".join(["---"] * 4 + ["---:"] * 12) + " |"]
    fmt = lambda v, f="{:.3f}": "n/a" if v is None else f.format(v)  # noqa: E731
    for row in rows:
        for part in what:
            ours = row["jax"].get(part, {})
            peers = {peer: row.get(peer, {}) for peer in PEERS}
            speeds = [peers[peer].get(part, {}).get("clips_per_s") for peer in PEERS]
            ratio = lambda peer: (None if peer is None or "clips_per_s" not in ours  # noqa: E731
                                  else ours["clips_per_s"] / peer)
            lines.append(
                f"| {row['arch']} | {row['input']} ({row['batch']}) | {row['dtype']} | {part} | "
                f"{fmt(ours.get('clips_per_s'))} | "
                f"{fmt(speeds[0])} | {fmt(speeds[1])} | {fmt(ratio(speeds[0]), '{:.2f}x')} | "
                f"{fmt(ratio(speeds[1]), '{:.2f}x')} | {fmt(ours.get('compile_s'), '{:.0f}')} | "
                f"{fmt(peers['torch_compile'].get(part, {}).get('compile_s'), '{:.0f}')} | "
                f"{fmt(row['jax'].get('peak_rss_mb'), '{:.0f}')} | "
                f"{fmt(peers['torch_eager'].get('peak_rss_mb'), '{:.0f}')} | "
                f"{fmt(peers['torch_compile'].get('peak_rss_mb'), '{:.0f}')} | "
                f"{fmt(ours.get('gflop_per_clip'), '{:.1f}')} | "
                f"{fmt(ours.get('percent_of_peak'), '{:.0f}%')} |")
    return "\n".join(lines)


def write_json(path: Path, record: dict) -> None:
    """`record` into `path` whole or not at all (a run stopped midway keeps the rows so far)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="all", help=f"comma-separated, from {ARCHITECTURES}")
    parser.add_argument("--what", default="train,inference")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"from {PEERS}, or none")
    parser.add_argument("--batch", type=int, default=None,
                        help="clips per call (default 1; 2 for conv3d, whose fully connected "
                        "BatchNorm PyTorch refuses to train on one clip)")
    parser.add_argument("--iters", type=int, default=5, help="timed calls (median) after warm-up")
    parser.add_argument("--dtypes", default="auto",
                        help=f"comma-separated, from {DTYPES}; 'auto' (the default): float32, "
                             "and bfloat16 where the CPU has it natively "
                             f"({' or '.join(host.NATIVE_BF16_FLAGS)})")
    parser.add_argument("--flops-per-cycle", type=int, default=None,
                        help="FP32 FLOPs per cycle per core (default: 64 with AVX-512, else 32)")
    parser.add_argument("--worker-timeout", type=int, default=1800)
    parser.add_argument("--xla-flags", default="",
                        help="added to XLA_FLAGS in every JAX process (default: none; the "
                             "library adds its own CPU flags, i3d_jax/kernels/xla_flags.py, as "
                             "for any script)")
    parser.add_argument("--glibc-tunables", default=HUGE_PAGES,
                        help="GLIBC_TUNABLES of every worker, ours and PyTorch's (default: "
                             "%(default)s, the huge-pages recipe of docs/benchmarks.md; '' for "
                             "glibc's defaults)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", choices=("jax", *PEERS, "jax_reference", "torch_check"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--exchange", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.what = [w for w in args.what.split(",") if w]
    bad = set(args.what) - {"train", "inference"}
    if bad:
        parser.error(f"--what: {sorted(bad)} not in train, inference")
    archs = list(ARCHITECTURES) if args.arch == "all" else args.arch.split(",")
    unknown = [a for a in archs if a not in ARCHITECTURES]
    if unknown:
        parser.error(f"--arch: unknown {unknown}; known: {', '.join(ARCHITECTURES)}")
    peers = [] if args.peers == "none" else args.peers.split(",")
    if set(peers) - set(PEERS):
        parser.error(f"--peers: {sorted(set(peers) - set(PEERS))} not in {PEERS}")

    try:
        dtypes, dtype_warning = dtypes_for(args.dtypes)
    except ValueError as error:
        parser.error(str(error))

    if args.worker in ("jax_reference", "torch_check"):
        print(json.dumps(check_worker(args.worker, archs[0], args.exchange)))
        return 0
    if args.worker:
        shapes = input_shapes(archs[0], batch_for(archs[0], args.batch))
        if args.worker == "jax":
            result = jax_worker(archs[0], shapes, args.what, args.iters, dtypes[0])
        else:
            result = torch_worker(archs[0], shapes, args.what, args.iters,
                                  args.worker == "torch_compile", dtypes[0])
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return 0

    if args.flops_per_cycle is None:
        from benchmarks.machine import isa

        args.flops_per_cycle = 64 if "avx512f" in isa() else 32
    if dtype_warning:
        print(f"warning: {dtype_warning}", file=sys.stderr, flush=True)
    peak, peak_how = cpu_peak_gflops(args.flops_per_cycle)
    peaks = {"float32": peak, "bfloat16": BF16_PEAK_FACTOR * peak}
    record = {"command": "python -m benchmarks.run " + " ".join(argv or sys.argv[1:]),
              "machine": machine_record(), "cpu_peak_gflops": peak, "cpu_peak": peak_how,
              "cpu_peak_gflops_bfloat16": peaks["bfloat16"], "dtypes": dtypes,
              "dtype_warning": dtype_warning, "batch": args.batch,
              "xla_flags_added": args.xla_flags, "glibc_tunables": args.glibc_tunables,
              "rows": []}
    from importlib import metadata

    try:
        record["versions"] = {name: metadata.version(name) for name in ("jax", "torch")}
    except metadata.PackageNotFoundError as error:
        raise SystemExit(f"benchmarks.run needs jax and torch installed: {error}")
    for arch in archs:
        batch = batch_for(arch, args.batch)
        shapes = input_shapes(arch, batch)
        # One check an architecture: the networks are the same in every dtype.
        check = check_peer(arch, args)
        print(f"[{arch}] PyTorch peer agrees: {check}", file=sys.stderr, flush=True)
        for dtype in dtypes:
            row = {"batch": batch, "arch": arch, "dtype": dtype, "input": " + ".join(
                f"{s} {'x'.join(map(str, shape[1:4]))}" for s, shape in shapes.items()),
                "check": check}
            for kind in ("jax", *peers):
                result = run_worker(kind, arch, args, dtype)
                for part in args.what:
                    if part in result:
                        r = result[part]
                        r["clips_per_s"] = batch / r["seconds"]
                        if "flops" in r:
                            r["gflop_per_clip"] = r["flops"] / batch / 1e9
                            r["percent_of_peak"] = (100 * r["flops"] / r["seconds"] / 1e9
                                                    / peaks[dtype])
                row[kind] = result
            record["rows"].append(row)
            if args.json:
                write_json(args.json, record)
    table = markdown(record["rows"], args.what)
    record["table"] = table
    if args.json:
        write_json(args.json, record)
    m = record["machine"]
    print(f"{m['cpu']} ({', '.join(m['isa'])}), {m['cores_available']} cores; peak "
          f"{peak:.0f} GFLOP/s ({peak_how}; bfloat16 x{BF16_PEAK_FACTOR}); "
          f"{', '.join(dtypes)}; jax {record['versions']['jax']}, torch "
          f"{record['versions']['torch']}; XLA_FLAGS +{args.xla_flags!r}, "
          f"GLIBC_TUNABLES={args.glibc_tunables!r}")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
