"""What a run is built from (`setup`): its mesh, dataset, model and kernels,
step functions, abstract sharded state, checkpoint manager and evaluator;
and its first state (`initial_state`), born sharded."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
from absl import logging

from i3d_jax import checkpoints, sharding
from i3d_jax.streams import model_inputs
from i3d_jax.evaluation import Evaluator
from i3d_jax.kernels import choose_kernels
from i3d_jax.kernels.host import bf16_warning
from i3d_jax.models import build_model
from i3d_jax.train.config_keys import (
    check_config, clip_options, loss_endpoints, model_fields, streams)
from i3d_jax.train.init_from import init_variables
from i3d_jax.train.optim import make_optimizer, make_schedule
from i3d_jax.train.step import StepFunctions, TrainState, state_key

if TYPE_CHECKING:  # the GPU benchmark imports the step where ml_collections is absent
    import ml_collections

# Architectures whose streams have their own logits (averaged into the model's):
# evaluation scores each stream too, the paper's RGB and Flow columns.
STREAM_ENDPOINTS = {"two_stream": ("rgb_logits", "flow_logits"),
                    "two_stream_i3d": ("rgb_logits", "flow_logits")}

# The init program runs once, and XLA:CPU spends most of its compile in LLVM's
# optimisation of the one fusion per parameter's random draw: without it the
# compile is about 4x shorter and the values the same to the last bit or so
# (float rounding of the truncated normal). CPU only: where it was measured.
CPU_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": "0"}


def _builder(config):
    """The config's TFDS builder; one-line errors for a name no builder knows."""
    import tensorflow_datasets as tfds

    from i3d_jax import datasets

    try:
        return datasets.builder(config.dataset, data_dir=config.data_dir or None)
    except (tfds.core.registered.DatasetNotFoundError, ValueError, KeyError) as error:
        raise ValueError(f"config.dataset {config.dataset!r}: {str(error).splitlines()[0]} "
                         f"(this project builds {', '.join(datasets.BUILDER_NAMES)})") from None


def check_dataset(config):
    """The config's builder, refused (naming the command that builds it) where the
    dataset is neither prepared nor one this process can build on first use."""
    builder = _builder(config)
    if not builder.is_prepared() and getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
        name, _, variant = config.dataset.partition("/")
        raise FileNotFoundError(
            f"dataset {config.dataset!r} is not built in {builder.data_dir}: build it with "
            f"`python -m i3d_jax.datasets.build {name}"
            + (f" --config={variant}" if variant else "")
            + f" --manual_dir=YOUR_FILES --data_dir={Path(builder.data_dir).parents[2]}` "
            "(docs/datasets.md), or point config.data_dir at where it was built")
    return builder


def check_mesh(config):
    """The config's mesh, its batches checked against it (before anything is written)."""
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    sharding.check_batch_size(config.batch_size, mesh)
    if (config.batch_size // config.grad_accum_steps) % sharding.data_parallel_size(mesh):
        raise ValueError(
            f"micro-batches of config.batch_size / config.grad_accum_steps = "
            f"{config.batch_size // config.grad_accum_steps} do not split over the mesh's "
            f"{sharding.data_parallel_size(mesh)} devices")
    sharding.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
    return mesh


def dataset_builder(config):
    """The config's dataset, built here on first use when it needs no manual download."""
    from i3d_jax import datasets

    builder = check_dataset(config)
    if builder.is_prepared():
        return builder
    if jax.process_index() == 0:
        logging.info("building %s in %s (first use)", config.dataset,
                     builder.data_dir)
        started = time.time()
        builder.download_and_prepare()
        logging.info("built %s in %.0f s", config.dataset, time.time() - started)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("dataset built")
    return datasets.builder(config.dataset, data_dir=config.data_dir or None)


def class_names(builder) -> list[str]:
    label = builder.info.features["label"]
    return list(label.names)


def abstract_inputs(config, num_frames_by_stream, batch: int):
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
    evaluator: Evaluator


def warn_if_emulated_bf16(dtype: str, platform: str) -> None:
    """Logs a warning where `dtype` is bfloat16 on a CPU that only emulates it."""
    warning = bf16_warning(platform) if dtype == "bfloat16" else None
    if warning:
        logging.warning("config.%s", warning)


def setup(config, workdir) -> Run:
    """Everything but the data iterators and the state's values."""
    check_config(config)
    workdir = Path(workdir)
    mesh = check_mesh(config)
    builder = dataset_builder(config)
    labels = class_names(builder)
    num_classes = config.model.num_classes or len(labels)
    if num_classes < len(labels):
        raise ValueError(f"config.model.num_classes={num_classes}, but {config.dataset} has "
                         f"{len(labels)} classes")
    fields = model_fields(config, num_classes)
    warn_if_emulated_bf16(config.dtype, mesh.devices.flat[0].platform)
    model = build_model(config.model.architecture, kernels=choose_kernels(config.model.kernels),
                        **fields)
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
    example = abstract_inputs(config, frames, 1)
    abstract_state = jax.eval_shape(fns.init, state_key(0), example)
    state_shardings = sharding.tree_shardings(abstract_state, mesh)
    manager = checkpoints.training_manager(
        workdir, save_every=config.checkpoint_every_steps, keep=config.keep_checkpoints)
    evaluator = Evaluator(
        config=config, builder=builder, mesh=mesh, model=model, stream_names=names,
        options=clip_options(config), num_classes=num_classes,
        variable_shardings={"params": state_shardings.params,
                            "batch_stats": state_shardings.batch_stats},
        eval_endpoints=fns.eval_endpoints)
    return Run(config, workdir, mesh, builder, metadata, fns, abstract_state, state_shardings,
               manager, evaluator)


def initial_state(run: Run) -> TrainState:
    """A fresh state born sharded, from config.seed (and config.init_from's weights)."""
    config = run.config
    frames = {s: config.input[s].num_frames for s in run.fns.stream_names}
    example = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                           abstract_inputs(config, frames, 1))
    options = CPU_INIT_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
    init = jax.jit(run.fns.init, out_shardings=run.state_shardings, compiler_options=options)
    state = init(state_key(config.seed), example)
    if config.init_from:
        variables = init_variables(config, {"params": state.params,
                                             "batch_stats": state.batch_stats})
        placed = jax.device_put(
            variables, {"params": run.state_shardings.params,
                        "batch_stats": run.state_shardings.batch_stats})
        state = state.replace(params=placed["params"], batch_stats=placed["batch_stats"],
                              opt_state=jax.jit(run.fns.optimizer.init,
                                                out_shardings=run.state_shardings.opt_state)(
                                  placed["params"]))
    return state


def load_run_for_eval(config, workdir, step: int | None = None):
    """(run, variables, step) of a training workdir's checkpoint, for `i3d-jax eval`."""
    if not checkpoints.is_training_workdir(workdir):
        raise FileNotFoundError(f"{workdir} holds no training checkpoints (no checkpoints/)")
    run = setup(config, workdir)
    step = checkpoints.newest_whole_step(run.manager) if step is None else step
    if step is None or step not in run.manager.all_steps():
        raise FileNotFoundError(
            f"{run.manager.directory}: no checkpoint"
            + (f" at step {step} (have {sorted(run.manager.all_steps())})"
               if step is not None else ""))
    checkpoints.check_resumable(run.manager, step, run.metadata, Path(workdir))
    state = checkpoints.restore_training(run.manager, step, run.abstract_state,
                                         run.state_shardings, None)
    return run, {"params": state.params, "batch_stats": state.batch_stats}, step
