"""The C3D-like 3D-ConvNet on Kinetics-400: the paper's Table 3, row "3D-ConvNet"
(RGB, from scratch: it has no ImageNet counterpart).

    i3d-jax train --workdir runs/c3d --config experiments/kinetics400_conv3d.py:gpu8

Argument: a preset, cpu | gpu8 | tpu_v5e_64 (optional).

The paper's top-1 on the Kinetics-400 test set (Table 3): 56.1.

Input (the paper's Table 1): 16-frame 112x112 clips (C3D's: the short side
resized to 128, a random 112 crop, rather than the 256 / 224 of the other
models); tested as 15 evenly spaced 16-frame clips of each video (its
fully-connected layers take 16 frames), predictions averaged. The recipe is
`i3d_jax.configs.paper_recipe` (see kinetics400_i3d.py); the paper trained its
3D ConvNets on 64 GPUs.
"""
from __future__ import annotations

from i3d_jax.configs import kinetics400_config, parse_variant


def get_config(arg: str | None = None):
    variant = parse_variant(arg, __file__)
    return kinetics400_config(variant, {
        "dataset": "kinetics/400",
        "model.architecture": "conv3d",
        "input.rgb.num_frames": 16,
        "input.resize_short_side": 128, "input.crop_size": 112,
        "eval.whole_video_frames": 0, "eval.num_clips": 15,
        "init_from": "",
    })
