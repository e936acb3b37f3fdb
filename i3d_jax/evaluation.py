"""What `i3d-jax eval` reports beyond the trainer's numbers: two-stream fusion of
separately trained runs, per-class accuracy, the confusion matrix and its picture.

Fusion averages logits, not softmax probabilities: it is what the paper's
released evaluation does (the RGB and flow logits added, then one softmax), and
what our two-stream models compute inside (`(rgb_logits + flow_logits) / 2`), so
fusing an RGB run with a flow run scores exactly as a two-stream config whose
streams were trained separately. Top-1 and top-5 are the same for a sum or a mean.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from i3d_jax.train import EvalPredictions, prediction_metrics


def fuse(runs: list[EvalPredictions], names: list[str]) -> EvalPredictions:
    """The runs' logits averaged video by video (aligned on their video ids)."""
    first = runs[0]
    order = {int(k): i for i, k in enumerate(first.video_keys)}
    if len(order) != len(first.video_keys):
        raise ValueError(f"{names[0]}: the eval split repeats video ids")
    fused = first.logits["logits"].astype(np.float64).copy()
    for run, name in zip(runs[1:], names[1:]):
        keys = [int(k) for k in run.video_keys]
        missing = sorted(set(order) - set(keys))
        extra = sorted(set(keys) - set(order))
        if missing or extra or len(keys) != len(order):
            raise ValueError(
                f"cannot fuse {name} with {names[0]}: their eval splits hold other videos "
                f"({len(missing)} of {names[0]}'s are not in {name}, {len(extra)} of {name}'s "
                f"are not in {names[0]})")
        if run.logits["logits"].shape[1] != fused.shape[1]:
            raise ValueError(f"cannot fuse {name} ({run.logits['logits'].shape[1]} classes) "
                             f"with {names[0]} ({fused.shape[1]} classes)")
        index = np.array([order[k] for k in keys])
        if not np.array_equal(first.labels[index], run.labels):
            raise ValueError(f"cannot fuse {name} with {names[0]}: the same videos have "
                             "other labels (different label lists?)")
        fused[index] += run.logits["logits"]
    fused /= len(runs)
    return dataclasses.replace(first, logits={"logits": fused.astype(np.float32)})


def confusion_matrix(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[true, predicted] counts."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, np.argmax(logits, axis=1)), 1)
    return matrix


def per_class_accuracy(confusion: np.ndarray, class_names: list[str]) -> dict:
    """{class name: top-1 accuracy} of the classes the split holds."""
    totals = confusion.sum(axis=1)
    return {class_names[c]: float(confusion[c, c] / totals[c])
            for c in range(len(class_names)) if totals[c]}


def report(predictions: EvalPredictions, class_names: list[str]) -> tuple[dict, np.ndarray]:
    """(metrics, each stream's too, with per_class_accuracy; the confusion matrix) of the
    logits."""
    num_classes = len(class_names)
    metrics = prediction_metrics(predictions, num_classes)
    confusion = confusion_matrix(predictions.logits["logits"], predictions.labels, num_classes)
    metrics["per_class_accuracy"] = per_class_accuracy(confusion, class_names)
    return metrics, confusion


def plot_confusion(confusion: np.ndarray, class_names: list[str], path: Path, title: str) -> Path:
    """The row-normalised confusion matrix as a PNG, written whole or not at all."""
    from i3d_jax.report import pyplot, save_png

    plt = pyplot()
    totals = confusion.sum(axis=1, keepdims=True)
    rates = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    n = len(class_names)
    size = min(4 + n * 0.35, 40)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= 60:  # beyond that, names would overlap: indices only
        ax.set_xticks(range(n), class_names, rotation=90, fontsize=8)
        ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return save_png(fig, path)
