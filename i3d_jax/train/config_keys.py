"""What a config's keys mean for a run, checked before anything heavy runs:
the streams, the loss endpoints, the model's fields, the clip options."""
from __future__ import annotations

import jax.numpy as jnp

from i3d_jax.kernels import KERNEL_CHOICES
from i3d_jax.train.optim import OPTIMIZERS, TRAINABLE, make_schedule

BATCH_NORM_MODES = ("global", "per_device", "frozen")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


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


def check_config(config) -> None:
    """Refuses a bad config before anything heavy runs, naming the key."""
    streams(config)
    if not config.dataset:
        raise ValueError("config.dataset is empty: name a TFDS dataset (e.g. synthetic_motion/rgb, "
                         "kinetics/400, video_folder/rgb)")
    if not config.schedule.learning_rate > 0:
        raise ValueError(f"config.schedule.learning_rate must be positive, got "
                         f"{config.schedule.learning_rate}")
    if config.input.crop_size < 1 or config.eval.batch_size < 1:
        raise ValueError(f"config.input.crop_size and config.eval.batch_size must be at least 1, "
                         f"got {config.input.crop_size} and {config.eval.batch_size}")
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
    if config.model.kernels not in KERNEL_CHOICES:
        raise ValueError(f"config.model.kernels must be one of {KERNEL_CHOICES}, "
                         f"got {config.model.kernels!r}")
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


def clip_options(config, *, dtype="uint8"):
    """The pipeline's clips for `config`: uint8 by default, scaled to [-1, 1] and
    mirrored (the flips the pipeline drew) inside the jitted steps
    (`streams.model_inputs`)."""
    from i3d_jax.input_pipeline import ClipOptions, StreamSampling

    names = streams(config)
    per_stream = tuple(
        (s, StreamSampling(config.input[s].num_frames, config.input[s].stride,
                           config.input[s].offset)) for s in names)
    first = dict(per_stream)[names[0]]
    return ClipOptions(num_frames=first.num_frames, stride=first.stride,
                       crop_size=config.input.crop_size,
                       resize_short_side=config.input.resize_short_side, modalities=names,
                       dtype=dtype, per_stream=per_stream, flip_on_device=True)

