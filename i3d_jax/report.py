"""Training reports from runs' `metrics.jsonl`: curves of loss and accuracy against
step (train and eval) as one PNG, and a markdown table of each run's final figures."""
from __future__ import annotations

import json
from pathlib import Path

from i3d_jax.atomic_file import write_atomically


def read_metrics(workdir) -> list[dict]:
    """The rows of `workdir/metrics.jsonl`; a line that is not JSON is an error naming it."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {workdir} a training run's directory?")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {number}: not JSON ({e.msg})") from None
        if "step" not in row or "kind" not in row:
            raise ValueError(f"{path}, line {number}: a row without step or kind")
        rows.append(row)
    return rows


def final_figures(rows: list[dict]) -> dict:
    """The last train row's loss and accuracy, the last eval's top-1/top-5/mean class."""
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    figures = {"steps": max((r["step"] for r in rows), default=0)}
    if train:
        figures.update(train_loss=train[-1]["loss"], train_accuracy=train[-1]["accuracy"])
    if evals:
        last = evals[-1]
        figures.update(eval_step=last["step"], top1=last["top1"], top5=last["top5"],
                       mean_class_accuracy=last["mean_class_accuracy"])
    return figures


def _cell(value, percent=False):
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if percent else (f"{value:.4f}" if isinstance(value, float)
                                                  else str(value))


def markdown_table(runs: dict[str, list[dict]]) -> str:
    lines = ["| run | steps | train loss | train accuracy (%) | eval top-1 (%) | eval top-5 (%) "
             "| mean class accuracy (%) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, rows in runs.items():
        f = final_figures(rows)
        lines.append(
            f"| {name} | {f['steps']} | {_cell(f.get('train_loss'))} | "
            f"{_cell(f.get('train_accuracy'), True)} | {_cell(f.get('top1'), True)} | "
            f"{_cell(f.get('top5'), True)} | {_cell(f.get('mean_class_accuracy'), True)} |")
    return "\n".join(lines) + "\n"


def pyplot():
    """matplotlib's pyplot on the Agg backend: files only, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def save_png(fig, path) -> Path:
    """`fig` as a PNG at `path`, written whole or not at all; the figure is closed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100))
    pyplot().close(fig)
    return path


def plot_curves(runs: dict[str, list[dict]], path) -> Path:
    """Loss and accuracy against step, train (lines) and eval (markers), one colour a run."""
    plt = pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, (name, rows) in enumerate(runs.items()):
        colour = f"C{index % 10}"
        train = [r for r in rows if r["kind"] == "train"]
        evals = [r for r in rows if r["kind"] == "eval"]
        if train:
            steps = [r["step"] for r in train]
            loss_ax.plot(steps, [r["loss"] for r in train], color=colour, label=f"{name} train")
            acc_ax.plot(steps, [r["accuracy"] for r in train], color=colour, alpha=0.6,
                        label=f"{name} train")
        if evals:
            acc_ax.plot([r["step"] for r in evals], [r["top1"] for r in evals], "o--",
                        color=colour, label=f"{name} eval top-1")
            if all("loss" in r for r in evals):
                loss_ax.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o--",
                             color=colour, label=f"{name} eval")
    loss_ax.set(xlabel="step", ylabel="loss", title="loss")
    acc_ax.set(xlabel="step", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def run_names(workdirs) -> list[str]:
    """Short unique names: each workdir's last path part, more parts where two share it."""
    paths = [Path(w).absolute() for w in workdirs]
    depth = 1
    while depth < 10:
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
        depth += 1
    return [str(p) for p in paths]
