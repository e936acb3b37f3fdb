"""Your own labelled videos: I3D fine-tuned from the Kinetics-400 weights on a
`video_folder` dataset (docs/datasets.md, "Your own videos").

    python -m i3d_jax.datasets.build video_folder --config=rgb --manual_dir=CLIPS --data_dir=runs/tfds
    i3d-jax train --workdir runs/mine --config own_videos --config.data_dir=runs/tfds

Argument (comma-separated; the first of each is the default):
  mode    last_layer | full
  preset  cpu | gpu8 | tpu_v5e_64

`last_layer` (the default) trains a new classifier on the fixed Kinetics
features, the paper's "Fixed" transfer: no backward pass through the trunk,
BatchNorm frozen, so a folder of a few hundred clips trains in minutes on a
2-core CPU. `full` fine-tunes end to end, as the paper's "Full-FT". Clips are
16 frames at 160x160 (the Kinetics network takes any size; at the paper's
64x224x224 a clip costs 16 times as much): for the best accuracy, and given an
accelerator, set `--config.input.rgb.num_frames=64 --config.input.crop_size=224`.
`total_steps` is for a few hundred clips (eight passes at batch 8): scale it
with your folder. The classes are the folder's (or list files').
"""
from __future__ import annotations

from i3d_jax.configs import apply_preset, default_config, parse_variant, set_values


def get_config(arg: str | None = None):
    variant = parse_variant(arg, __file__, mode=("last_layer", "full"))
    last_layer = variant["mode"] == "last_layer"
    config = default_config(lock=False)
    set_values(config, {
        # Data: `python -m i3d_jax.datasets.build video_folder ...` into config.data_dir.
        "dataset": "video_folder/rgb", "train_split": "train", "eval_split": "test",
        # The model: full-width I3D from the Kinetics-400 RGB weights (their 400-class
        # classifier replaced by one of your classes).
        "model.architecture": "i3d", "model.width_multiplier": 1.0,
        "model.dropout_rate": None, "model.batch_norm_momentum": 0.999, "dtype": "float32",
        "init_from": "kinetics400-rgb", "seed": 0,
        "trainable": "classifier" if last_layer else "all",
        "batch_norm": "frozen" if last_layer else "global",
        # Clips: 16 frames, a random 160 crop of the 256 short side, one flip.
        "input.streams": "rgb", "input.rgb.num_frames": 16, "input.crop_size": 160,
        "input.resize_short_side": None, "input.flip": True, "input.shuffle_buffer": 256,
        # SGD with momentum: 0.1 for the last layer, 0.01 end to end, cosine to 0.
        "total_steps": 300, "batch_size": 8,
        "optimizer.name": "sgd", "optimizer.momentum": 0.9, "optimizer.weight_decay": 1e-7,
        "schedule.name": "cosine", "schedule.learning_rate": 0.1 if last_layer else 0.01,
        "schedule.warmup_steps": 10,
        # Test: each video's first 64 frames, centre crop.
        "eval.whole_video_frames": 64, "eval.num_clips": 1, "eval.num_crops": 1,
        "eval.batch_size": 8, "eval_every_steps": 0,
        "log_every_steps": 20, "checkpoint_every_steps": 100, "keep_checkpoints": 2,
    })
    apply_preset(config, variant["preset"])
    config.lock()
    return config
