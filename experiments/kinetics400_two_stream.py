"""Two-Stream (Simonyan and Zisserman's, with Inception-v1 streams) on Kinetics-400:
the paper's Table 3, row "Two-Stream", from ImageNet-pretrained Inception-v1 and from
scratch.

    i3d-jax train --workdir runs/two_stream --config experiments/kinetics400_two_stream.py:imagenet,gpu8

Argument (comma-separated; the first of each is the default):
  init    imagenet | scratch
  preset  cpu | gpu8 | tpu_v5e_64

The paper's top-1 on the Kinetics-400 test set (Table 3):
  ImageNet-pretrained: RGB 62.2, Flow 52.4, RGB + Flow 65.6
  from scratch:        RGB 57.9, Flow 49.6, RGB + Flow 62.8
One run gives all three columns: the streams are separate networks, each trained
with its own loss (`loss.endpoints`), and `eval` scores each (`rgb_top1`,
`flow_top1`) and their average (`top1`).

Input (the paper's Table 1): one RGB frame and the 10 flow frames around it in
training; at test 25 RGB frames and their 250 flow frames, each RGB frame with
its 10, predictions averaged (`eval.whole_video_frames=250`: back-to-back views).
ImageNet start: `--config.init_from=inception_v1:tf-slim:PATH` (both streams from
the 2D Inception-v1, the flow stream's first conv averaged over RGB); default
below. The recipe is below (kinetics400_i3d.py says what the paper does not state
and we chose).
"""
from __future__ import annotations

from i3d_jax.configs import apply_preset, default_config, parse_variant, set_values

IMAGENET = "inception_v1:tf-slim:runs/imagenet/inception_v1.ckpt"


def get_config(arg: str | None = None):
    variant = parse_variant(arg, __file__, init=("imagenet", "scratch"))
    config = default_config(lock=False)
    set_values(config, {
        "dataset": "kinetics/400_flow",
        # The model: two full-width Inception-v1 streams (their own dropout), each
        # with its own loss; TF's BatchNorm momentum.
        "model.architecture": "two_stream", "model.width_multiplier": 1.0,
        "model.dropout_rate": None, "model.batch_norm_momentum": 0.999, "dtype": "float32",
        "loss.endpoints": "rgb_logits,flow_logits",
        "init_from": IMAGENET if variant["init"] == "imagenet" else "", "seed": 0,
        # Training clips: one RGB frame, 5 frames in, and the 10 flow frames
        # around it; a random 224 crop of the stored frames, one flip.
        "input.streams": "rgb,flow", "input.rgb.num_frames": 1, "input.rgb.offset": 5,
        "input.flow.num_frames": 10, "input.resize_short_side": None,
        "input.crop_size": 224, "input.flip": True, "input.shuffle_buffer": 1024,
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
        # Test: the whole video (250 frames: 25 RGB snapshots and their 250 flow
        # frames), centre crop, predictions averaged.
        "eval.whole_video_frames": 250, "eval.num_clips": 1, "eval.num_crops": 1,
    })
    apply_preset(config, variant["preset"])
    config.lock()
    return config
