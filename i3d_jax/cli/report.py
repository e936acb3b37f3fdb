"""`i3d-jax report`: training curves and a table of final figures for runs."""
from __future__ import annotations

import sys
from pathlib import Path


def cmd_report(args) -> int:
    from i3d_jax import report

    runs = dict(zip(report.run_names(args.workdirs),
                    (report.read_metrics(w) for w in args.workdirs)))
    out = Path(args.out) if args.out else Path(args.workdirs[0]) / "report.png"
    report.plot_curves(runs, out)
    table = report.markdown_table(runs)
    if args.markdown:
        from i3d_jax.atomic_file import write_atomically

        write_atomically(args.markdown, lambda f: f.write(table.encode()))
    print(table, end="")
    print(f"curves: {out}", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="training curves (PNG) and a markdown table of final metrics for runs",
        description="Reads each run's metrics.jsonl: loss and accuracy against step, train and "
                    "eval, as one PNG; the final figures as a markdown table on stdout.")
    parser.add_argument("workdirs", nargs="+", metavar="DIR", help="training run directories")
    parser.add_argument("--out", default=None,
                        help="the PNG to write (default: the first DIR's report.png)")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    parser.set_defaults(func=cmd_report)
