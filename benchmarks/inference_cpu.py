"""CPU inference throughput of I3D RGB: this project (JAX/Flax) vs a PyTorch I3D.

Both models get the same weights (the shared reference's seeded pytorch-i3d
weights when that folder is present, otherwise a seeded random init of the
PyTorch model), run on the same clip (default 1x64x224x224x3), and must agree
before anything is timed. Run from the repository root:

    PYTHONPATH=. python benchmarks/inference_cpu.py [--iters 5] [--json out.json]

Threads: PyTorch is set to one intra-op thread per core available to this
process; XLA's CPU backend sizes its own thread pool to all the cores and has
no thread-count setting in JAX's public API, so both use every core.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.machine import available_cores, cpu_model, time_calls  # noqa: E402

DEFAULT_REFERENCE_DIR = REPO.parent / "shared" / "reference"


def seeded_state_dict(reference_dir: Path, torch_model):
    """(state_dict of numpy arrays, description of where the weights came from)."""
    manifest_path = reference_dir / "pytorch_i3d_rgb_manifest.json"
    script = reference_dir / "seeded_weights.py"
    if manifest_path.exists() and script.exists():
        spec = importlib.util.spec_from_file_location("_i3d_reference_seeded_weights", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        manifest = json.loads(manifest_path.read_text())
        state = module.seeded_weights(manifest, layout="torch", seed=0)
        return state, "reference seeded_weights(seed=0)"

    # No reference folder: throughput does not depend on the values, but give
    # BatchNorm non-trivial statistics so the agreement check still tests it.
    import torch

    torch.manual_seed(0)
    for module in torch_model.modules():
        if isinstance(module, torch.nn.Conv3d):
            module.reset_parameters()
        elif isinstance(module, torch.nn.BatchNorm3d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0.0, 0.1)
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = {k: v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()}
    return state, "torch.manual_seed(0) random init (reference folder not found)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per framework")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations after compiling")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=224, help="frame height and width")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument(
        "--reference-dir",
        type=Path,
        default=Path(os.environ.get("I3D_REFERENCE_DIR", DEFAULT_REFERENCE_DIR)),
        help="shared reference folder with seeded_weights.py (default: $I3D_REFERENCE_DIR "
        "or ../shared/reference)",
    )
    args = parser.parse_args(argv)
    if args.iters < 1:
        parser.error("--iters must be at least 1")

    import jax
    import torch

    from benchmarks.torch_i3d import InceptionI3d as TorchI3d
    from i3d_jax.convert.pytorch_i3d import convert_pytorch_i3d
    from i3d_jax.models import build_model

    cores = available_cores()
    torch.set_num_threads(cores)

    # --- models, same weights ---------------------------------------------
    torch_model = TorchI3d().eval()
    state, weights_from = seeded_state_dict(args.reference_dir, torch_model)
    torch_model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    variables = jax.device_put(convert_pytorch_i3d(state))
    jax_model = build_model("i3d", batch_norm_scale=True)  # the kernels a script gets
    # Weights are an argument, not closed over: as constants XLA would fold
    # them into the program and compile far more slowly.
    jax_forward = jax.jit(lambda v, x: jax_model.apply(v, x, train=False))

    shape = (args.batch, args.frames, args.size, args.size, 3)  # [B, T, H, W, C]
    clip = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    x_jax = jax.device_put(clip)
    # PyTorch convolutions take [B, C, T, H, W]; the layout change is done once
    # here, outside the timed loop, as the JAX input is also prepared once.
    x_torch = torch.from_numpy(clip).permute(0, 4, 1, 2, 3).contiguous()

    def run_torch():
        with torch.inference_mode():
            per_time, _ = torch_model(x_torch)
            return per_time.mean(dim=2)

    def run_jax():
        return jax_forward(variables, x_jax).block_until_ready()

    # --- compile, warm up, check agreement ----------------------------------
    start = time.perf_counter()
    jax_logits = np.asarray(run_jax())  # first call traces and compiles
    compile_s = time.perf_counter() - start
    torch_logits = run_torch().numpy()
    max_diff = float(np.abs(jax_logits - torch_logits).max())
    scale = float(np.abs(torch_logits).max())
    print(f"input {shape} (B, T, H, W, C); weights: {weights_from}")
    print(f"JAX jit compile + first call: {compile_s:.1f} s (not timed below)")
    print(f"logits max abs diff JAX vs PyTorch: {max_diff:.2e} (max |logit| {scale:.2f})")
    if not max_diff <= 1e-3 * max(scale, 1.0):
        raise SystemExit("the two models disagree; refusing to time them")
    for _ in range(args.warmup):
        run_jax()
        run_torch()

    # --- time ---------------------------------------------------------------
    results = {}
    for name, fn in (("pytorch", run_torch), ("jax", run_jax)):
        times = time_calls(fn, args.iters)
        mean = statistics.fmean(times)
        results[name] = {
            "seconds_per_iter": times,
            "mean_s": mean,
            "median_s": statistics.median(times),
            "clips_per_s": args.batch / mean,
        }
    ratio = results["jax"]["clips_per_s"] / results["pytorch"]["clips_per_s"]

    versions = {"jax": jax.__version__, "pytorch": torch.__version__}
    print(f"\nCPU: {cpu_model()}, {cores} cores available; "
          f"torch threads {torch.get_num_threads()}, XLA uses all cores")
    print(f"{'framework':<22}{'mean s/iter':>12}{'median s':>10}{'clips/s':>9}")
    labels = {"jax": f"JAX {versions['jax']}", "pytorch": f"PyTorch {versions['pytorch']}"}
    for name, label in labels.items():
        r = results[name]
        print(f"{label:<22}{r['mean_s']:>12.3f}{r['median_s']:>10.3f}{r['clips_per_s']:>9.3f}")
    print(f"ratio JAX / PyTorch clips/s: {ratio:.2f}  ({args.iters} iterations each)")

    if args.json:
        report = {
            "input_shape_btwhc": list(shape),
            "iters": args.iters,
            "warmup": args.warmup,
            "weights": weights_from,
            "logits_max_abs_diff": max_diff,
            "jax_compile_s": compile_s,
            "jax": results["jax"],
            "pytorch": results["pytorch"],
            "ratio_jax_over_pytorch": ratio,
            "versions": {**versions, "flax": _version("flax"), "numpy": np.__version__,
                         "python": platform.python_version()},
            "cores": cores,
            "torch_threads": torch.get_num_threads(),
            "cpu_model": cpu_model(),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
