"""Evaluation: a model on a config's eval split (`Evaluator`), the metrics
the trainer logs and `i3d-jax eval` reports, two-stream fusion of separately
trained runs, per-class accuracy, the confusion matrix and its picture.

Each eval video is seen once, as `eval.num_clips` x `eval.num_crops` views or
whole, its logits averaged over the views; batches are padded with a mask so
every process runs the same steps. The trainer builds an `Evaluator` for its
run and calls it; nothing here knows the trainer.

Fusion averages logits, not softmax probabilities: it is what the paper's
released evaluation does (the RGB and flow logits added, then one softmax), and
what our two-stream models compute inside (`(rgb_logits + flow_logits) / 2`), so
fusing an RGB run with a flow run scores exactly as a two-stream config whose
streams were trained separately. Top-1 and top-5 are the same for a sum or a mean.
"""
from __future__ import annotations

import dataclasses
import time
import zlib
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging

from i3d_jax import sharding
from i3d_jax.streams import model_inputs

@dataclasses.dataclass
class EvalPredictions:
    """Every eval video's view-averaged logits, in the split's order."""

    logits: dict  # "logits" and each stream endpoint: [N, C] float32
    labels: np.ndarray  # [N] int
    video_keys: np.ndarray  # [N] int32, crc32 of the video ids: what fusion aligns on


def _video_keys(video_ids) -> np.ndarray:
    # int32: JAX (without x64) carries them to the other processes unchanged.
    return np.array([zlib.crc32(bytes(v)) for v in video_ids], np.uint32).view(np.int32)


def view_averaged_logits(model, stream_names, eval_endpoints, params, batch_stats, batch):
    """{"logits": [B, C], and each of `eval_endpoints`} of eval batches [B, V, T, ...],
    logits averaged over the V views."""
    inputs = model_inputs(batch, stream_names)
    views = jax.tree.leaves(inputs)[0].shape[1]
    flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), inputs)
    variables = {"params": params, "batch_stats": batch_stats}
    if eval_endpoints:
        logits, endpoints = model.apply(variables, flat, train=False, return_endpoints=True)
        outputs = {"logits": logits, **{e: endpoints[e] for e in eval_endpoints}}
    else:
        outputs = {"logits": model.apply(variables, flat, train=False)}
    return {k: v.reshape(-1, views, v.shape[-1]).mean(axis=1) for k, v in outputs.items()}


def classification_metrics(logits, labels, num_classes: int) -> dict:
    """top-1, top-5 and mean per-class accuracy of logits [N, C] (numpy)."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if not len(labels):
        raise ValueError("no examples to evaluate")
    order = np.argsort(-logits, axis=1)
    top1 = order[:, 0] == labels
    top5 = (order[:, :5] == labels[:, None]).any(axis=1)
    present = [c for c in range(num_classes) if (labels == c).any()]
    per_class = [top1[labels == c].mean() for c in present]
    return {"top1": float(top1.mean()), "top5": float(top5.mean()),
            "mean_class_accuracy": float(np.mean(per_class)), "num_examples": int(len(labels))}


def prediction_metrics(predictions: EvalPredictions, num_classes: int) -> dict:
    """top-1, top-5, mean class accuracy, num_examples; a stream's as `rgb_top1` etc."""
    metrics = classification_metrics(predictions.logits["logits"], predictions.labels,
                                     num_classes)
    for endpoint, logits in predictions.logits.items():
        if endpoint != "logits":
            stream = endpoint.removesuffix("_logits")
            for k, v in classification_metrics(logits, predictions.labels, num_classes).items():
                if k != "num_examples":
                    metrics[f"{stream}_{k}"] = v
    return metrics


def stream_top1_text(metrics: dict) -> str:
    """"  rgb top-1 0.9000  flow top-1 0.8000" for the streams `metrics` scores ("" if none)."""
    return "".join(f"  {s} top-1 {metrics[f'{s}_top1']:.4f}" for s in ("rgb", "flow")
                   if f"{s}_top1" in metrics)


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """A model on the eval split of a config (its `eval_split`, `eval.*` and
    `input.threads` keys) and dataset, on `mesh`."""

    config: Any
    builder: Any
    mesh: Any
    model: Any
    stream_names: tuple[str, ...]
    options: Any  # the input pipeline's ClipOptions
    # {"params": ..., "batch_stats": ...}: where the variables live on the mesh.
    variable_shardings: dict
    num_classes: int
    # Endpoints scored besides the logits: a two-stream model's own streams.
    eval_endpoints: tuple[str, ...] = ()

    def _jitted_step(self):
        def step(params, batch_stats, batch):
            return view_averaged_logits(self.model, self.stream_names, self.eval_endpoints,
                                        params, batch_stats, batch)

        return jax.jit(step, in_shardings=(self.variable_shardings["params"],
                                           self.variable_shardings["batch_stats"],
                                           sharding.batch_sharding(self.mesh)),
                       out_shardings=sharding.batch_sharding(self.mesh))

    def predict(self, variables) -> EvalPredictions:
        """Each video of the split once, as `eval.num_clips` x `eval.num_crops`
        views or whole, logits averaged over views; `variables` a
        {params, batch_stats} tree (or a train state with those fields)."""
        from jax.experimental import multihost_utils

        from i3d_jax.input_pipeline import DatasetIterator, eval_dataset

        config = self.config
        params, batch_stats = _params_and_stats(variables)
        ds, _ = eval_dataset(
            self.builder, batch_size=sharding.check_batch_size(config.eval.batch_size, self.mesh,
                                                               "eval.batch_size"),
            options=self.options, split=config.eval_split,
            num_clips=config.eval.num_clips, num_crops=config.eval.num_crops,
            whole_video_frames=config.eval.whole_video_frames or None,
            threads=config.input.threads or None)
        step_fn = self._jitted_step()
        parts = []
        for batch in DatasetIterator(ds):
            local = {k: v for k, v in batch.items() if k != "video_id"}
            arrays = sharding.global_batch({**local, "key": _video_keys(batch["video_id"])},
                                           self.mesh)
            outputs = step_fn(params, batch_stats, arrays)
            # Labels, masks and ids from the global arrays too: gathered in the logits' order.
            parts.append(multihost_utils.process_allgather(
                {**outputs, **{k: arrays[k] for k in ("label", "mask", "key")}}, tiled=True))
        mask = np.concatenate([p["mask"] for p in parts]).astype(bool)
        joined = {k: np.concatenate([p[k] for p in parts])[mask] for k in parts[0] if k != "mask"}
        return EvalPredictions(
            logits={k: joined[k].astype(np.float32) for k in ("logits", *self.eval_endpoints)},
            labels=joined["label"].astype(np.int64), video_keys=joined["key"].astype(np.int32))

    def evaluate(self, variables, *, log_progress: bool = True) -> dict:
        """top-1, top-5, mean class accuracy over the split (logged in one line)."""
        started = time.time()
        metrics = prediction_metrics(self.predict(variables), self.num_classes)
        if log_progress:
            logging.info("eval on %s: top-1 %.4f  top-5 %.4f  mean class %.4f%s  (%d videos, "
                         "%.1f s)", self.config.eval_split, metrics["top1"], metrics["top5"],
                         metrics["mean_class_accuracy"], stream_top1_text(metrics),
                         metrics["num_examples"], time.time() - started)
        return metrics


def _params_and_stats(variables):
    if isinstance(variables, dict):
        return variables["params"], variables["batch_stats"]
    return variables.params, variables.batch_stats


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
