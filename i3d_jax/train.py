"""Training and evaluation: `train_and_evaluate(config, workdir)`.

The state is born sharded (`jax.eval_shape(init)` -> shardings from the
fsdp rule -> `jax.jit(init, out_shardings=...)`), one `jax.jit` step with
explicit shardings updates it in place (donated), and each process feeds
its own part of every global batch. Which model runs, which streams it is
fed and which of its outputs get a loss all come from the config: the
trainer knows no architecture by name.

The workdir holds `config.json`, `checkpoints/` (Orbax: state, input
position, model metadata), `metrics.jsonl` and TensorBoard event files.
Rerunning on a workdir resumes from its latest checkpoint; `init_from`
starts from other weights and is never taken for a resume.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging as logging_lib
import os
import signal
import socket
import threading
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from i3d_jax import checkpoints, sharding
from i3d_jax.models import build_model, cpu_features, cpu_ops
from i3d_jax.models.layers import resolve_conv_impl

if TYPE_CHECKING:  # the GPU benchmark imports the step where ml_collections is absent
    import ml_collections

BATCH_NORM_MODES = ("global", "per_device", "frozen")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "piecewise", "cosine")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    # The first step whose loss or gradient norm was not finite (-1: none). From
    # then on the state stops changing, so what the host saves is the last good one.
    first_bad_step: jax.Array


def state_key(seed: int) -> jax.Array:
    """The run's PRNG key. RBG, not threefry: XLA:CPU compiles threefry slowly, once
    per parameter, and the init of I3D took 31 s to compile with it, 8 s with RBG.
    RBG's draws depend on how the arrays are sharded, so a run is reproducible
    for a given mesh (and a resume on another mesh continues from saved values)."""
    return jax.random.key(seed, impl="rbg")


# --------------------------------------------------------------------------
# The pieces a config names


def streams(config) -> tuple[str, ...]:
    names = tuple(s.strip() for s in config.input.streams.split(",") if s.strip())
    if not names or set(names) - {"rgb", "flow"} or len(set(names)) != len(names):
        raise ValueError(f"config.input.streams must name rgb and/or flow, got "
                         f"{config.input.streams!r}")
    return names


def loss_endpoints(config) -> tuple[str, ...]:
    return tuple(s.strip() for s in config.loss.endpoints.split(",") if s.strip())


def model_fields(config, num_classes: int) -> dict:
    """The keyword fields of `build_model` that the config sets."""
    if config.dtype not in DTYPES:
        raise ValueError(f"config.dtype must be one of {sorted(DTYPES)}, got {config.dtype!r}")
    fields = {
        "num_classes": num_classes,
        "width_multiplier": config.model.width_multiplier,
        "batch_norm_scale": config.model.batch_norm_scale,
        "dtype": DTYPES[config.dtype],
    }
    if config.model.dropout_rate is not None:
        fields["dropout_rate"] = config.model.dropout_rate
    if config.model.batch_norm_momentum is not None:
        fields["batch_norm_momentum"] = config.model.batch_norm_momentum
    if config.batch_norm == "frozen":
        fields["frozen_batch_norm"] = True
    return fields


def make_schedule(config):
    s = config.schedule
    if s.name not in SCHEDULES:
        raise ValueError(f"config.schedule.name must be one of {SCHEDULES}, got {s.name!r}")
    warmup = min(s.warmup_steps, config.total_steps)
    rest = max(config.total_steps - warmup, 1)
    if s.name == "constant":
        main = optax.constant_schedule(s.learning_rate)
    elif s.name == "cosine":
        main = optax.cosine_decay_schedule(s.learning_rate, rest)
    else:
        boundaries = [b - warmup for b in s.boundaries if b > 0]
        main = optax.piecewise_constant_schedule(
            s.learning_rate, {b: s.factor for b in boundaries if b > 0})
    if not warmup:
        return main
    return optax.join_schedules(
        [optax.linear_schedule(0.0, s.learning_rate, warmup), main], [warmup])


TRAINABLE = ("all", "classifier")


def is_classifier(path) -> bool:
    """A parameter of a `Logits` module (every classifier head of our architectures)."""
    return any(getattr(k, "key", None) == "Logits" for k in path)


def _classifier_labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "train" if is_classifier(path) else "freeze", params)


def _decay_mask(params):
    # Kernels only: biases, BatchNorm offsets and scales are not decayed.
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(config, schedule) -> optax.GradientTransformation:
    o = config.optimizer
    if o.name not in OPTIMIZERS:
        raise ValueError(f"config.optimizer.name must be one of {OPTIMIZERS}, got {o.name!r}")
    parts = []
    if o.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
    if o.name == "sgd":
        if o.weight_decay:
            parts.append(optax.add_decayed_weights(o.weight_decay, mask=_decay_mask))
        parts.append(optax.sgd(schedule, momentum=o.momentum or None, nesterov=o.nesterov))
    else:
        parts.append(optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay,
                                 mask=_decay_mask))
    optimizer = optax.chain(*parts)
    if config.trainable == "classifier":
        # The trunk's parameters get no update (and no optimiser state) at all.
        optimizer = optax.multi_transform({"train": optimizer, "freeze": optax.set_to_zero()},
                                          _classifier_labels)
    return optimizer


def check_config(config) -> None:
    """Refuses a bad config before anything heavy runs, naming the key."""
    streams(config)
    if config.batch_norm not in BATCH_NORM_MODES:
        raise ValueError(f"config.batch_norm must be one of {BATCH_NORM_MODES}, "
                         f"got {config.batch_norm!r}")
    for key in ("total_steps", "batch_size", "grad_accum_steps", "log_every_steps",
                "checkpoint_every_steps", "keep_checkpoints"):
        if config[key] < 1:
            raise ValueError(f"config.{key} must be at least 1, got {config[key]}")
    if config.eval_every_steps < 0:
        raise ValueError(f"config.eval_every_steps must be >= 0, got {config.eval_every_steps}")
    if config.batch_size % config.grad_accum_steps:
        raise ValueError(f"config.batch_size={config.batch_size} does not split into "
                         f"config.grad_accum_steps={config.grad_accum_steps} micro-batches")
    if config.dtype not in DTYPES:
        raise ValueError(f"config.dtype must be one of {sorted(DTYPES)}, got {config.dtype!r}")
    if config.trainable not in TRAINABLE:
        raise ValueError(f"config.trainable must be one of {TRAINABLE}, got {config.trainable!r}")
    if config.trainable == "classifier" and config.batch_norm != "frozen":
        raise ValueError("config.trainable='classifier' trains the last layer on fixed features: "
                         f"set config.batch_norm='frozen' (got {config.batch_norm!r})")
    make_schedule(config)
    if config.optimizer.name not in OPTIMIZERS:
        raise ValueError(f"config.optimizer.name must be one of {OPTIMIZERS}, "
                         f"got {config.optimizer.name!r}")
    from i3d_jax.models import ARCHITECTURES

    if config.model.architecture not in ARCHITECTURES:
        raise ValueError(f"config.model.architecture {config.model.architecture!r} is not one "
                         f"of {sorted(ARCHITECTURES)}")
    if config.eval.num_crops not in (1, 3):
        raise ValueError(f"config.eval.num_crops must be 1 or 3, got {config.eval.num_crops}")
    if config.eval.num_clips < 1 or config.eval.whole_video_frames < 0:
        raise ValueError("config.eval.num_clips must be >= 1 and config.eval.whole_video_frames "
                         f">= 0, got {config.eval.num_clips} and {config.eval.whole_video_frames}")
    for stream in streams(config):
        s = config.input[stream]
        if s.num_frames < 1 or s.stride < 1 or s.offset < 0:
            raise ValueError(f"config.input.{stream}: num_frames and stride must be >= 1 and "
                             f"offset >= 0, got {s.num_frames}, {s.stride}, {s.offset}")
    if config.schedule.name == "piecewise":
        early = [b for b in config.schedule.boundaries if 0 < b <= config.schedule.warmup_steps]
        if early:
            raise ValueError(f"config.schedule.boundaries {early} fall within the "
                             f"{config.schedule.warmup_steps} warmup steps")


# --------------------------------------------------------------------------
# Steps (pure functions of the state and a batch)


def model_inputs(batch, stream_names):
    """One stream's array, or {"rgb", "flow"} for a model fed several."""
    if len(stream_names) == 1:
        return batch[stream_names[0]]
    return {s: batch[s] for s in stream_names}


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Mean softmax cross-entropy; logits [B, (T,) C] (a loss at every step) and labels [B]."""
    onehot = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        onehot = optax.smooth_labels(onehot, label_smoothing)
    onehot = jnp.broadcast_to(onehot.reshape(onehot.shape[:1] + (1,) * (logits.ndim - 2)
                                             + onehot.shape[1:]), logits.shape)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), onehot).mean()


@dataclasses.dataclass(frozen=True)
class StepFunctions:
    """The model-specific parts of the steps, fixed for a run."""

    model: Any
    optimizer: optax.GradientTransformation
    schedule: Any
    stream_names: tuple[str, ...]
    loss_endpoints: tuple[str, ...] = ()
    label_smoothing: float = 0.0
    batch_norm: str = "global"
    grad_accum_steps: int = 1
    # Devices whose batch shards get their own BatchNorm statistics ("per_device").
    num_batch_groups: int = 1
    mesh: Any = None
    # Endpoints evaluated besides the logits: a two-stream model's own streams.
    eval_endpoints: tuple[str, ...] = ()
    # "classifier": gradients for the Logits modules only (none through the trunk).
    trainable: str = "all"

    def init(self, rng, example_inputs) -> TrainState:
        params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
        variables = self.model.init({"params": params_rng, "dropout": dropout_rng},
                                    example_inputs, train=False)
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}),
                          opt_state=self.optimizer.init(params), rng=state_rng,
                          first_bad_step=jnp.full((), -1, jnp.int32))

    def _apply(self, params, batch_stats, inputs, rng):
        """(logits, endpoints or None, new batch_stats) in training mode."""
        variables = {"params": params, "batch_stats": batch_stats}
        kwargs = {"return_endpoints": True} if self.loss_endpoints else {}
        if self.batch_norm == "frozen":
            # The model was built with frozen_batch_norm: running averages only.
            out = self.model.apply(variables, inputs, train=True, rngs={"dropout": rng}, **kwargs)
            new_stats = batch_stats
        else:
            out, updates = self.model.apply(variables, inputs, train=True, rngs={"dropout": rng},
                                            mutable=["batch_stats"], **kwargs)
            new_stats = updates.get("batch_stats", batch_stats)
        logits, endpoints = out if self.loss_endpoints else (out, None)
        return logits, endpoints, new_stats

    def _apply_per_group(self, params, batch_stats, inputs, rng):
        """Each device's shard of the batch through BatchNorm on its own statistics:
        the batch as [groups, B / groups, ...], vmapped, the group axis on the devices."""
        groups = self.num_batch_groups
        group_sharding = NamedSharding(self.mesh, P(sharding.BATCH_AXES))

        def split(x):
            x = x.reshape(groups, x.shape[0] // groups, *x.shape[1:])
            return jax.lax.with_sharding_constraint(x, group_sharding)

        grouped = jax.tree.map(split, inputs)
        rngs = jax.random.split(rng, groups)
        logits, endpoints, stats = jax.vmap(self._apply, in_axes=(None, None, 0, 0))(
            params, batch_stats, grouped, rngs)
        merge = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
        # Running statistics: the average of the devices' (each device's own
        # would differ; one copy is kept).
        return (merge(logits), None if endpoints is None else jax.tree.map(merge, endpoints),
                jax.tree.map(lambda s: s.mean(axis=0), stats))

    def loss_fn(self, params, batch_stats, batch, rng):
        if self.trainable == "classifier":
            # The trunk as constants: XLA then drops the whole backward pass through it.
            params = jax.tree_util.tree_map_with_path(
                lambda path, p: p if is_classifier(path) else jax.lax.stop_gradient(p), params)
        inputs = model_inputs(batch, self.stream_names)
        apply = self._apply_per_group if self.batch_norm == "per_device" else self._apply
        logits, endpoints, new_stats = apply(params, batch_stats, inputs, rng)
        labels = batch["label"]
        if self.loss_endpoints:
            missing = [e for e in self.loss_endpoints if e not in endpoints]
            if missing:
                raise ValueError(f"config.loss.endpoints names {missing}; the model returns "
                                 f"{sorted(endpoints)}")
            loss = sum(cross_entropy(endpoints[e], labels, self.label_smoothing)
                       for e in self.loss_endpoints) / len(self.loss_endpoints)
        else:
            loss = cross_entropy(logits, labels, self.label_smoothing)
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        return loss, (new_stats, correct.mean())

    def train_step(self, state: TrainState, batch) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(state.rng, state.step)
        grad_fn = jax.value_and_grad(self.loss_fn, has_aux=True)
        k = self.grad_accum_steps
        if k == 1:
            (loss, (new_stats, accuracy)), grads = grad_fn(
                state.params, state.batch_stats, batch, rng)
        else:
            # Micro-batch j takes rows j, j + k, ...: every device keeps feeding
            # its own rows, nothing moves between devices.
            def micro(x):
                return x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)

            micro_batches = jax.tree.map(micro, batch)

            def accumulate(carry, xs):
                grads_sum, stats, loss_sum, acc_sum = carry
                micro_batch, j = xs
                (loss, (stats, acc)), grads = grad_fn(state.params, stats, micro_batch,
                                                      jax.random.fold_in(rng, j))
                grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
                return (grads_sum, stats, loss_sum + loss, acc_sum + acc), None

            zeros = jax.tree.map(jnp.zeros_like, state.params)
            (grads, new_stats, loss, accuracy), _ = jax.lax.scan(
                accumulate, (zeros, state.batch_stats, 0.0, 0.0), (micro_batches, jnp.arange(k)))
            grads = jax.tree.map(lambda g: g / k, grads)
            loss, accuracy = loss / k, accuracy / k

        grad_norm = self.gradient_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep_going = finite & (state.first_bad_step < 0)

        def updated(state):
            updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
            return state.replace(step=state.step + 1,
                                 params=optax.apply_updates(state.params, updates),
                                 batch_stats=new_stats, opt_state=opt_state)

        if self.runs_cpu_forms():
            # On XLA:CPU a conditional rather than a select between the new state
            # and the old: selecting made XLA copy every parameter's old momentum
            # before updating it in place (a Two-Stream step: 252 copies).
            new_state = jax.lax.cond(keep_going, updated, lambda state: state, state)
        else:
            # Elsewhere a select: XLA:GPU's conditionals have waited on the host
            # for their predicate, which would hold up the rest of the step.
            new_state = jax.tree.map(lambda new, old: jnp.where(keep_going, new, old),
                                     updated(state), state)
        new_state = new_state.replace(first_bad_step=jnp.where(
            (state.first_bad_step < 0) & ~finite, state.step + 1, state.first_bad_step))
        metrics = {"loss": loss, "accuracy": accuracy, "grad_norm": grad_norm,
                   "learning_rate": jnp.asarray(self.schedule(state.step), jnp.float32)}
        return new_state, metrics

    def runs_cpu_forms(self) -> bool:
        """Whether the model computes in XLA:CPU's fast forms (`conv_impl` "cpu",
        what "auto" is on the CPU backend): the step's own arithmetic follows."""
        return resolve_conv_impl(getattr(self.model, "conv_impl", "native")) == "cpu"

    def gradient_norm(self, grads):
        """The global norm of `grads`: `cpu_ops.global_norm` with the CPU forms,
        optax's elsewhere (the same value, in another order)."""
        return cpu_ops.global_norm(grads) if self.runs_cpu_forms() else optax.global_norm(grads)

    def eval_step(self, params, batch_stats, batch):
        """{"logits": [B, C], and each of `eval_endpoints`} of eval batches [B, V, T, ...],
        logits averaged over the V views."""
        inputs = model_inputs(batch, self.stream_names)
        views = jax.tree.leaves(inputs)[0].shape[1]
        flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), inputs)
        variables = {"params": params, "batch_stats": batch_stats}
        if self.eval_endpoints:
            logits, endpoints = self.model.apply(variables, flat, train=False,
                                                 return_endpoints=True)
            outputs = {"logits": logits, **{e: endpoints[e] for e in self.eval_endpoints}}
        else:
            outputs = {"logits": self.model.apply(variables, flat, train=False)}
        return {k: v.reshape(-1, views, v.shape[-1]).mean(axis=1) for k, v in outputs.items()}


# --------------------------------------------------------------------------
# Metrics


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


class MetricsLog:
    """`metrics.jsonl` (one JSON object a line) and TensorBoard, from process 0 only."""

    def __init__(self, workdir: Path):
        from clu import metric_writers

        self.enabled = jax.process_index() == 0
        self.path = workdir / "metrics.jsonl"
        # TensorBoard only: the progress line already says it all in the log.
        self.writer = (metric_writers.SummaryWriter(str(workdir)) if self.enabled
                       else metric_writers.MultiWriter([]))

    def write(self, step: int, kind: str, values: dict) -> None:
        if not self.enabled:
            return
        scalars = {k: v for k, v in values.items() if isinstance(v, (int, float))}
        self.writer.write_scalars(step, {f"{kind}/{k}": v for k, v in scalars.items()})
        self.writer.flush()
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "kind": kind, **values}) + "\n")

    def close(self):
        self.writer.close()


class _LibraryChatter(logging_lib.Filter):
    """Drops the INFO lines Orbax and TFDS log on every save and read; warnings stay."""

    SOURCES = ("/orbax/", "/tensorflow_datasets/", "/tensorflow/python/checkpoint/")

    def filter(self, record) -> bool:
        return record.levelno > logging_lib.INFO or not any(
            s in record.pathname for s in self.SOURCES)


def quiet_library_logs() -> None:
    logger = logging_lib.getLogger("absl")
    if not any(isinstance(f, _LibraryChatter) for f in logger.filters):
        logger.addFilter(_LibraryChatter())


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


# --------------------------------------------------------------------------
# Data


def clip_options(config, *, dtype="float32"):
    from i3d_jax.input_pipeline import ClipOptions, StreamSampling

    names = streams(config)
    per_stream = tuple(
        (s, StreamSampling(config.input[s].num_frames, config.input[s].stride,
                           config.input[s].offset)) for s in names)
    first = dict(per_stream)[names[0]]
    return ClipOptions(num_frames=first.num_frames, stride=first.stride,
                       crop_size=config.input.crop_size,
                       resize_short_side=config.input.resize_short_side, modalities=names,
                       dtype=dtype, per_stream=per_stream)


def dataset_builder(config):
    """The config's dataset, built here on first use when it needs no manual download."""
    from i3d_jax import datasets

    data_dir = config.data_dir or None
    builder = datasets.builder(config.dataset, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
        raise FileNotFoundError(
            f"dataset {config.dataset!r} is not prepared in {builder.data_dir}; build it first "
            f"(`tfds build` or `python -m i3d_jax.datasets.build`, see its README), or point "
            f"config.data_dir at where it was built")
    if jax.process_index() == 0:
        logging.info("building %s in %s (first use)", config.dataset,
                     builder.data_dir)
        started = time.time()
        builder.download_and_prepare()
        logging.info("built %s in %.0f s", config.dataset, time.time() - started)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("dataset built")
    return datasets.builder(config.dataset, data_dir=data_dir)


def class_names(builder) -> list[str]:
    label = builder.info.features["label"]
    return list(label.names)


# --------------------------------------------------------------------------
# The run


def write_config(config, workdir: Path) -> None:
    if jax.process_index() != 0:
        return
    from i3d_jax.atomic_file import write_atomically

    text = config.to_json_best_effort(indent=2, sort_keys=True) + "\n"
    write_atomically(workdir / "config.json", lambda f: f.write(text.encode()))


def _abstract_inputs(config, num_frames_by_stream, batch: int):
    channels = {"rgb": 3, "flow": 2}
    size = config.input.crop_size
    arrays = {s: jax.ShapeDtypeStruct((batch, num_frames_by_stream[s], size, size, channels[s]),
                                      jnp.float32) for s in streams(config)}
    return model_inputs(arrays, streams(config))


@dataclasses.dataclass
class Run:
    """What a run is built from: its mesh, model, steps and checkpoints."""

    config: ml_collections.ConfigDict
    workdir: Path
    mesh: Any
    builder: Any
    metadata: checkpoints.ModelMetadata
    fns: StepFunctions
    abstract_state: Any
    state_shardings: Any
    manager: Any


def warn_if_emulated_bf16(dtype: str, platform: str) -> None:
    """Logs a warning where `dtype` is bfloat16 on a CPU that only emulates it."""
    warning = cpu_features.bf16_warning(platform) if dtype == "bfloat16" else None
    if warning:
        logging.warning("config.%s", warning)


def setup(config, workdir) -> Run:
    """Everything but the data iterators and the state's values."""
    check_config(config)
    workdir = Path(workdir)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    sharding.check_batch_size(config.batch_size, mesh)
    if (config.batch_size // config.grad_accum_steps) % sharding.data_parallel_size(mesh):
        raise ValueError(
            f"micro-batches of config.batch_size / config.grad_accum_steps = "
            f"{config.batch_size // config.grad_accum_steps} do not split over the mesh's "
            f"{sharding.data_parallel_size(mesh)} devices")
    sharding.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
    builder = dataset_builder(config)
    labels = class_names(builder)
    num_classes = config.model.num_classes or len(labels)
    if num_classes < len(labels):
        raise ValueError(f"config.model.num_classes={num_classes}, but {config.dataset} has "
                         f"{len(labels)} classes")
    fields = model_fields(config, num_classes)
    warn_if_emulated_bf16(config.dtype, mesh.devices.flat[0].platform)
    model = build_model(config.model.architecture, **fields)
    names = streams(config)
    metadata = checkpoints.ModelMetadata(
        architecture=config.model.architecture, stream="+".join(names), num_classes=num_classes,
        in_channels=sum({"rgb": 3, "flow": 2}[s] for s in names),
        batch_norm_scale=config.model.batch_norm_scale,
        width_multiplier=config.model.width_multiplier,
        labels=labels if len(labels) == num_classes else [],
        source=f"trained on {config.dataset}")
    schedule = make_schedule(config)
    fns = StepFunctions(
        model=model, optimizer=make_optimizer(config, schedule), schedule=schedule,
        stream_names=names, loss_endpoints=loss_endpoints(config),
        label_smoothing=config.loss.label_smoothing, batch_norm=config.batch_norm,
        grad_accum_steps=config.grad_accum_steps,
        num_batch_groups=sharding.data_parallel_size(mesh), mesh=mesh,
        eval_endpoints=STREAM_ENDPOINTS.get(config.model.architecture, ()),
        trainable=config.trainable)
    frames = {s: config.input[s].num_frames for s in names}
    example = _abstract_inputs(config, frames, 1)
    abstract_state = jax.eval_shape(fns.init, state_key(0), example)
    state_shardings = sharding.tree_shardings(abstract_state, mesh)
    manager = checkpoints.training_manager(
        workdir, save_every=config.checkpoint_every_steps, keep=config.keep_checkpoints)
    return Run(config, workdir, mesh, builder, metadata, fns, abstract_state, state_shardings,
               manager)


# config.init_from = "inception_v1:FORMAT:PATH": the paper's ImageNet bootstrap for
# any architecture with Inception-v1 layers (inflated where 3D), FORMAT one of
# `i3d_jax.inflate.SOURCES`.
INCEPTION_V1_PREFIX = "inception_v1:"


def read_init_source(source: str) -> dict:
    """The variables of config.init_from: named weights ("kinetics400-rgb"), a
    `convert` / `inflate` checkpoint directory or a training workdir."""
    if Path(source).exists():
        return checkpoints.load_pretrained(source)[1]
    from i3d_jax.weights import PRETRAINED, load_weights

    if source not in PRETRAINED:
        raise FileNotFoundError(
            f"config.init_from {source!r} is neither a checkpoint directory, nor one of the "
            f"named weights ({', '.join(PRETRAINED)}), nor {INCEPTION_V1_PREFIX}FORMAT:PATH")
    return load_weights(source)[1]


def _init_variables(run: Run, fresh: dict) -> dict:
    """config.init_from's variables for the state's fresh {params, batch_stats}."""
    source = run.config.init_from
    if source.startswith(INCEPTION_V1_PREFIX):
        from i3d_jax.inflate import SOURCES, init_from_inception_v1, read_source

        fmt, _, path = source.removeprefix(INCEPTION_V1_PREFIX).partition(":")
        if fmt not in SOURCES or not path:
            raise ValueError(f"config.init_from {source!r}: expected {INCEPTION_V1_PREFIX}"
                             f"FORMAT:PATH with FORMAT one of {', '.join(SOURCES)}")
        if not Path(path).exists() and not Path(path + ".index").exists():
            raise FileNotFoundError(f"config.init_from {source!r}: {path} not found")
        inception_v1, _ = read_source(fmt, path)
        variables = init_from_inception_v1(run.config.model.architecture,
                                           jax.tree.map(np.asarray, fresh), inception_v1,
                                           origin=f"{fmt} Inception-v1 {path}")
        logging.info("init_from %s: the Inception-v1 layers from ImageNet (inflated where 3D), "
                     "the rest freshly initialised", source)
        return variables
    return checkpoints.merge_init_variables(read_init_source(source), fresh, source)


def initial_state(run: Run) -> TrainState:
    """A fresh state born sharded, from config.seed (and config.init_from's weights)."""
    config = run.config
    frames = {s: config.input[s].num_frames for s in run.fns.stream_names}
    example = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                           _abstract_inputs(config, frames, 1))
    init = jax.jit(run.fns.init, out_shardings=run.state_shardings)
    state = init(state_key(config.seed), example)
    if config.init_from:
        variables = _init_variables(run, {"params": state.params,
                                          "batch_stats": state.batch_stats})
        placed = jax.device_put(
            variables, {"params": run.state_shardings.params,
                        "batch_stats": run.state_shardings.batch_stats})
        state = state.replace(params=placed["params"], batch_stats=placed["batch_stats"],
                              opt_state=jax.jit(run.fns.optimizer.init,
                                                out_shardings=run.state_shardings.opt_state)(
                                  placed["params"]))
    return state


def _train_iterator(run: Run):
    from i3d_jax.input_pipeline import DatasetIterator, train_dataset

    config = run.config
    return DatasetIterator(train_dataset(
        run.builder, batch_size=sharding.check_batch_size(config.batch_size, run.mesh),
        options=clip_options(config), split=config.train_split, seed=config.seed,
        shuffle_buffer=config.input.shuffle_buffer, flip=config.input.flip,
        threads=config.input.threads or None))


# Architectures whose streams have their own logits (averaged into the model's):
# evaluation scores each stream too, the paper's RGB and Flow columns.
STREAM_ENDPOINTS = {"two_stream": ("rgb_logits", "flow_logits"),
                    "two_stream_i3d": ("rgb_logits", "flow_logits")}


@dataclasses.dataclass
class EvalPredictions:
    """Every eval video's view-averaged logits, in the split's order."""

    logits: dict  # "logits" and each stream endpoint: [N, C] float32
    labels: np.ndarray  # [N] int
    video_keys: np.ndarray  # [N] int32, crc32 of the video ids: what fusion aligns on


def _video_keys(video_ids) -> np.ndarray:
    # int32: JAX (without x64) carries them to the other processes unchanged.
    return np.array([zlib.crc32(bytes(v)) for v in video_ids], np.uint32).view(np.int32)


def predict_eval_split(run: Run, state_or_variables) -> EvalPredictions:
    """The config's eval split through the model: each video once, as
    `eval.num_clips` x `eval.num_crops` views or whole, logits averaged over views."""
    from jax.experimental import multihost_utils

    from i3d_jax.input_pipeline import DatasetIterator, eval_dataset

    config = run.config
    if isinstance(state_or_variables, TrainState):
        params, batch_stats = state_or_variables.params, state_or_variables.batch_stats
    else:
        params, batch_stats = state_or_variables["params"], state_or_variables["batch_stats"]
    ds, _ = eval_dataset(
        run.builder, batch_size=sharding.check_batch_size(config.eval.batch_size, run.mesh,
                                                          "eval.batch_size"),
        options=clip_options(config), split=config.eval_split,
        num_clips=config.eval.num_clips, num_crops=config.eval.num_crops,
        whole_video_frames=config.eval.whole_video_frames or None,
        threads=config.input.threads or None)
    step_fn = _jitted_eval_step(run)
    parts = []
    for batch in DatasetIterator(ds):
        local = {k: v for k, v in batch.items() if k != "video_id"}
        arrays = sharding.global_batch({**local, "key": _video_keys(batch["video_id"])},
                                       run.mesh)
        outputs = step_fn(params, batch_stats, arrays)
        # Labels, masks and ids from the global arrays too: gathered in the logits' order.
        parts.append(multihost_utils.process_allgather(
            {**outputs, **{k: arrays[k] for k in ("label", "mask", "key")}}, tiled=True))
    mask = np.concatenate([p["mask"] for p in parts]).astype(bool)
    joined = {k: np.concatenate([p[k] for p in parts])[mask] for k in parts[0] if k != "mask"}
    return EvalPredictions(
        logits={k: joined[k].astype(np.float32) for k in ("logits", *run.fns.eval_endpoints)},
        labels=joined["label"].astype(np.int64), video_keys=joined["key"].astype(np.int32))


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


def evaluate(run: Run, state_or_variables, *, log_progress: bool = True) -> dict:
    """top-1, top-5, mean class accuracy over the config's eval split."""
    started = time.time()
    metrics = prediction_metrics(predict_eval_split(run, state_or_variables),
                                 run.metadata.num_classes)
    if log_progress:
        logging.info("eval on %s: top-1 %.4f  top-5 %.4f  mean class %.4f%s  (%d videos, "
                     "%.1f s)", run.config.eval_split, metrics["top1"], metrics["top5"],
                     metrics["mean_class_accuracy"], stream_top1_text(metrics),
                     metrics["num_examples"], time.time() - started)
    return metrics


def jit_train_step(fns: StepFunctions, state_shardings, mesh):
    """The jitted step: state in and out with its shardings (donated), batches split."""
    return jax.jit(fns.train_step,
                   in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                   out_shardings=(state_shardings, sharding.replicated(mesh)),
                   donate_argnums=0)


def _jitted_eval_step(run: Run):
    return jax.jit(run.fns.eval_step,
                   in_shardings=(run.state_shardings.params, run.state_shardings.batch_stats,
                                 sharding.batch_sharding(run.mesh)),
                   out_shardings=sharding.batch_sharding(run.mesh))


def _check_finite(state: TrainState, manager) -> None:
    bad = int(jax.device_get(state.first_bad_step))
    if bad >= 0:
        latest = manager.latest_step()
        raise FloatingPointError(
            f"non-finite loss or gradient norm at step {bad}: training stopped, nothing after "
            f"step {bad - 1} was kept"
            + (f"; the latest checkpoint (step {latest}) is from before it" if latest else ""))


@contextlib.contextmanager
def workdir_lock(workdir: Path):
    """One live run per workdir: an exclusive lock on `workdir/.train.lock`, held
    by process 0 while it trains. The kernel drops it when the process dies, so a
    killed run leaves nothing stuck."""
    if jax.process_index() != 0:
        yield
        return
    path = workdir / ".train.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            # A plain RuntimeError: the command line prints it as one line.
            raise RuntimeError(
                f"{workdir} is in use by a live run ({holder}); wait for it to end, stop it, "
                "or choose another --workdir") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
    """Trains (or resumes) in `workdir` to config.total_steps; returns the final eval metrics.

    SIGTERM (what a cluster sends before it takes a machine) saves a checkpoint at
    the next step boundary and returns; the same call again resumes from it.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    quiet_library_logs()
    # From the start: a notice during set-up or compiling saves after the first step.
    with workdir_lock(workdir), PreemptionNotice() as preemption:
        return _train_and_evaluate(config, workdir, preemption)


def _train_and_evaluate(config, workdir: Path, preemption) -> dict:
    run = setup(config, workdir)
    train_iter = _train_iterator(run)
    latest = run.manager.latest_step()
    if latest is not None:
        checkpoints.check_resumable(run.manager, latest, run.metadata, workdir)
        _drop_rows_after(workdir, latest)
        logging.info("resuming from step %d (latest checkpoint in %s)", latest,
                     run.manager.directory)
        state = checkpoints.restore_training(run.manager, latest, run.abstract_state,
                                             run.state_shardings, train_iter)
    else:
        if config.init_from:
            logging.info("starting a new run from the weights of %s (init_from, not a resume)",
                         config.init_from)
        else:
            logging.info("starting a new run from scratch (seed %d)", config.seed)
        state = initial_state(run)
    write_config(config, workdir)
    step = int(jax.device_get(state.step))
    metrics_log = MetricsLog(workdir)
    try:
        if step >= config.total_steps:
            logging.info("this run already finished: step %d of %d; nothing to train",
                         step, config.total_steps)
            return _last_eval(workdir, step) or evaluate(run, state)
        return _train_loop(run, state, step, train_iter, metrics_log, preemption)
    finally:
        run.manager.wait_until_finished()
        metrics_log.close()


def _metric_rows(workdir: Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _last_eval(workdir: Path, step: int) -> dict | None:
    """The eval metrics logged at `step`, if the run got that far (process 0's file:
    every process reads it, so all take the same path)."""
    evals = [r for r in _metric_rows(workdir) if r.get("kind") == "eval" and r["step"] == step]
    if not evals:
        return None
    return {k: v for k, v in evals[-1].items() if k not in ("kind", "step")}


def _drop_rows_after(workdir: Path, step: int) -> None:
    """A resumed run logs again the steps after its checkpoint: the first logging of
    them goes, so `metrics.jsonl` has each step once."""
    if jax.process_index() != 0:
        return
    rows = _metric_rows(workdir)
    kept = [r for r in rows if r["step"] <= step]
    if len(kept) != len(rows):
        from i3d_jax.atomic_file import write_atomically

        text = "".join(json.dumps(r) + "\n" for r in kept)
        write_atomically(workdir / "metrics.jsonl", lambda f: f.write(text.encode()))


def _train_loop(run: Run, state, step: int, train_iter, metrics_log: MetricsLog,
                preemption) -> dict:
    config = run.config
    logging.info("training %s on %s: steps %d -> %d, global batch %d, mesh data=%d x fsdp=%d",
                 config.model.architecture, config.dataset, step, config.total_steps,
                 config.batch_size, run.mesh.shape["data"], run.mesh.shape["fsdp"])
    return _steps(run, state, step, train_iter, metrics_log, preemption)


class PreemptionNotice:
    """Notes a SIGTERM (the warning TPU VMs, Kubernetes and SLURM give before they
    take a machine) so the loop can save at the next step boundary; Orbax's
    `reached_preemption` covers multi-process runs, whose processes must agree on
    the step."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self):
        # Several processes: jax.distributed's own notifier takes SIGTERM, and Orbax
        # asks it; a Python handler here would replace it.
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._note)
        return self

    def _note(self, signum, frame):
        del signum, frame
        self.received = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        elif jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def reached(self, manager, step: int) -> bool:
        if jax.process_count() > 1:
            return manager.reached_preemption(step)
        return self.received


def _steps(run: Run, state, step: int, train_iter, metrics_log: MetricsLog, preemption):
    config = run.config
    train_step = jit_train_step(run.fns, run.state_shardings, run.mesh)
    pending, interval_start, interval_steps = [], time.time(), 0
    run_start_step, run_start = step, time.time()
    final_eval = None
    while step < config.total_steps:
        batch = next(train_iter)
        state, metrics = train_step(state, sharding.global_batch(batch, run.mesh))
        step += 1
        interval_steps += 1
        pending.append(metrics)
        if step % config.log_every_steps == 0 or step == config.total_steps:
            _check_finite(state, run.manager)
            values = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}
            elapsed = time.time() - interval_start
            values["steps_per_sec"] = interval_steps / max(elapsed, 1e-9)
            values["clips_per_sec"] = values["steps_per_sec"] * config.batch_size
            done = step - run_start_step
            eta = (time.time() - run_start) / done * (config.total_steps - step)
            logging.info("step %d/%d  loss %.4f  accuracy %.3f  lr %.4g  %.1f clips/s  ETA %s",
                         step, config.total_steps, values["loss"], values["accuracy"],
                         values["learning_rate"], values["clips_per_sec"], _duration(eta))
            metrics_log.write(step, "train", values)
            pending, interval_start, interval_steps = [], time.time(), 0
        last = step == config.total_steps
        preempted = not last and preemption.reached(run.manager, step)
        if step % config.checkpoint_every_steps == 0 or last or preempted:
            _check_finite(state, run.manager)
            checkpoints.save_training(run.manager, step, state, train_iter, run.metadata,
                                      force=True)
        if preempted:
            run.manager.wait_until_finished()
            logging.info("SIGTERM: saved step %d in %s and stopped; the same command resumes "
                         "from it", step, run.manager.directory)
            return None
        if last or (config.eval_every_steps and step % config.eval_every_steps == 0):
            final_eval = evaluate(run, state)
            metrics_log.write(step, "eval", final_eval)
    logging.info("finished %d steps in %s", step - run_start_step,
                 _duration(time.time() - run_start))
    return final_eval


def load_run_for_eval(config, workdir, step: int | None = None):
    """(run, variables, step) of a training workdir's checkpoint, for `i3d-jax eval`."""
    if not checkpoints.is_training_workdir(workdir):
        raise FileNotFoundError(f"{workdir} holds no training checkpoints (no checkpoints/)")
    run = setup(config, workdir)
    step = run.manager.latest_step() if step is None else step
    if step is None or step not in run.manager.all_steps():
        raise FileNotFoundError(
            f"{run.manager.directory}: no checkpoint"
            + (f" at step {step} (have {sorted(run.manager.all_steps())})"
               if step is not None else ""))
    checkpoints.check_resumable(run.manager, step, run.metadata, Path(workdir))
    state = checkpoints.restore_training(run.manager, step, run.abstract_state,
                                         run.state_shardings, None)
    return run, {"params": state.params, "batch_stats": state.batch_stats}, step

