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
