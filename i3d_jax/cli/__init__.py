"""`i3d-jax`: classify videos, extract I3D features, convert and inflate
checkpoints, compute TV-L1 flow and FVD, summarise the paper's models, train
and evaluate them, and report on training runs.

Each command module has `register(subparsers)`, adding parsers whose
`func(args)` returns the exit code; a new command is a module appended to
COMMANDS. The modules only parse arguments and print: the work is done by
the library (`i3d_jax.inference`, `.convert`, `.inflate`, `.flow`, `.fvd`,
`.models.stats`).
"""
from __future__ import annotations

import argparse
import logging
import sys

import i3d_jax.quiet_tf  # noqa: F401  (before anything imports TF)
from i3d_jax import __version__
from i3d_jax.cli import (convert, export, flow, fvd, inflate, predict, report, summary,
                         train)

COMMANDS = (train, predict, convert, inflate, export, flow, fvd, summary, report)

# Mistakes in what the user asked for (a path, a flag, a missing optional
# package): one line is all they need. Anything else, an XLA error such as
# RESOURCE_EXHAUSTED above all, keeps its whole message and traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, ImportError,
               FloatingPointError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="i3d-jax",
        description="Classify videos, extract I3D features, convert and inflate checkpoints, "
                    "compute TV-L1 flow and FVD, and summarise the paper's models.",
        epilog="`i3d-jax COMMAND --help` describes a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def _is_user_error(error: BaseException) -> bool:
    import jax

    if isinstance(error, jax.errors.JaxRuntimeError):
        return False
    # weights.py's offline message is a RuntimeError that tells what to fetch.
    return isinstance(error, USER_ERRORS) or type(error) is RuntimeError


def main(argv=None):
    parser = build_parser()
    # train and eval leave `--config.KEY=VALUE` to ml_collections' config flags.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_config_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.config_overrides = extra
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The kernels' one line (which ones compute, and why) is worth seeing.
    logging.getLogger("i3d_jax.kernels").setLevel(logging.INFO)
    try:
        code = args.func(args)
    except Exception as e:
        if not _is_user_error(e):
            raise
        print(f"i3d-jax {args.command}: error: {e}", file=sys.stderr)
        code = 2
    sys.exit(code)
