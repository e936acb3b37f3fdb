"""The C3D-like 3D-ConvNet on Kinetics-400: the paper's Table 3, row "3D-ConvNet"
(RGB, from scratch: it has no ImageNet counterpart).

    i3d-jax train --workdir runs/c3d --config experiments/kinetics400_conv3d.py:gpu8

Argument: a preset, cpu | gpu8 | tpu_v5e_64 (optional).

The paper's top-1 on the Kinetics-400 test set (Table 3): 56.1.

Input (the paper's Table 1): 16-frame 112x112 clips (C3D's: the short side
resized to 128, a random 112 crop, rather than the 256 / 224 of the other
models); tested as 15 evenly spaced 16-frame clips of each video (its
fully-connected layers take 16 frames), predictions averaged. The recipe is
below (kinetics400_i3d.py says what the paper does not state and we chose); the
paper trained its 3D ConvNets on 64 GPUs.
"""
from __future__ import annotations

from i3d_jax.configs import apply_preset, default_config, parse_variant, set_values


def get_config(arg: str | None = None):
    variant = parse_variant(arg, __file__)
    config = default_config(lock=False)
    set_values(config, {
        "dataset": "kinetics/400",
        # The model: the full-width 3D-ConvNet, its own dropout, TF's BatchNorm momentum.
        "model.architecture": "conv3d", "model.width_multiplier": 1.0,
        "model.dropout_rate": None, "model.batch_norm_momentum": 0.999, "dtype": "float32",
        "init_from": "", "seed": 0, "loss.endpoints": "",
        # Training clips: 16 frames, the short side resized to 128, a random 112
        # crop, a random start, looped, one flip.
        "input.streams": "rgb", "input.rgb.num_frames": 16,
        "input.resize_short_side": 128, "input.crop_size": 112, "input.flip": True,
        "input.shuffle_buffer": 1024,
        # SGD with momentum 0.9, 110k steps of 256 clips, the rate divided by 10
        # at 60k and 95k (the steps, batch and rate are ours: see kinetics400_i3d.py).
        "total_steps": 110_000, "batch_size": 256,
        "optimizer.name": "sgd", "optimizer.momentum": 0.9, "optimizer.nesterov": False,
        "optimizer.weight_decay": 1e-7,
        "schedule.name": "piecewise", "schedule.learning_rate": 0.1,
        "schedule.warmup_steps": 0, "schedule.boundaries": (60_000, 95_000),
        "schedule.factor": 0.1,
        "log_every_steps": 100, "checkpoint_every_steps": 1000, "keep_checkpoints": 3,
        "eval_every_steps": 10_000, "eval.batch_size": 16,
        # Test: 15 evenly spaced 16-frame clips, centre crop, predictions averaged.
        "eval.whole_video_frames": 0, "eval.num_clips": 15, "eval.num_crops": 1,
    })
    apply_preset(config, variant["preset"])
    config.lock()
    return config
