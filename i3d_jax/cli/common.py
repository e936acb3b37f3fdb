"""What several commands share: label files, the stream option, the kernels option,
positive counts."""
from __future__ import annotations

import argparse

from i3d_jax.streams import STREAM_CHANNELS

STREAMS = tuple(STREAM_CHANNELS)
# i3d_jax.kernels.KERNEL_CHOICES, spelt out so that `--help` needs no JAX import.
KERNEL_CHOICES = ("auto", "xla", "cpu")


def positive_int(text: str) -> int:
    """argparse type of a count that must be at least 1 (argparse names the flag)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_kernels_argument(parser) -> None:
    """--kernels auto|xla|cpu: what the model computes with (`i3d_jax.kernels`)."""
    parser.add_argument(
        "--kernels", choices=KERNEL_CHOICES, default="auto",
        help="what the model computes with: xla, lax's own operations (what GPUs and TPUs "
             "run); cpu, the forms XLA:CPU runs fast (oneDNN convolutions); auto (default), "
             "cpu on a CPU where this jaxlib was tested with them, else xla")


def read_labels(path) -> list[str]:
    """Class names, one a line (blank lines skipped), in output order."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def add_multihost_arguments(parser) -> None:
    """The flags of a multi-host launch, as `train` and `features --out-dir` take them."""
    multihost = parser.add_argument_group(
        "multi-host", "one process per host, all with the same command but --process_id; "
        "without these flags a SLURM job of several tasks or a TPU pod slice is detected")
    multihost.add_argument("--coordinator_address", default=None,
                           help="HOST:PORT of process 0, which every process connects to")
    multihost.add_argument("--num_processes", type=int, default=None,
                           help="how many processes the job has")
    multihost.add_argument("--process_id", type=int, default=None,
                           help="this process's index, 0 to num_processes - 1")


def _cluster_detected() -> bool:
    """A launch that jax.distributed.initialize() can configure by itself."""
    import os

    return (int(os.environ.get("SLURM_NTASKS", "1")) > 1
            or "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""))


def start_distributed(args) -> None:
    """jax.distributed.initialize, before any other JAX call, from the flags or the
    cluster's environment; nothing for a single process."""
    given = [args.coordinator_address, args.num_processes, args.process_id]
    if any(v is not None for v in given):
        if any(v is None for v in given):
            raise ValueError("--coordinator_address, --num_processes and --process_id go "
                             "together: give all three or none")
        if args.num_processes < 1:
            raise ValueError(f"--num_processes must be at least 1, got {args.num_processes}")
        if not 0 <= args.process_id < args.num_processes:
            raise ValueError(f"--process_id {args.process_id} is out of range for "
                             f"--num_processes {args.num_processes} (0 to {args.num_processes - 1})")
    import jax

    if any(v is not None for v in given):
        jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    elif _cluster_detected():
        jax.distributed.initialize()
