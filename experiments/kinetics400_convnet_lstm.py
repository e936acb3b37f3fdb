"""ConvNet+LSTM on Kinetics-400: the paper's Table 3, row "ConvNet+LSTM" (RGB), from
ImageNet-pretrained Inception-v1 and from scratch.

    i3d-jax train --workdir runs/lstm --config experiments/kinetics400_convnet_lstm.py:imagenet,gpu8

Argument (comma-separated; the first of each is the default):
  init    imagenet | scratch
  preset  cpu | gpu8 | tpu_v5e_64

The paper's top-1 on the Kinetics-400 test set (Table 3): 63.3 ImageNet-pretrained,
53.9 from scratch (Table 2 prints 63.6 for the ImageNet-pretrained model).

Input (the paper's section 2.1 and Table 1): 25 frames, one of every 5 of the
25 fps video (5 s); a cross-entropy loss on the output of every time step
(`loss.endpoints=LogitsPerTime`), the last step's output at test. The paper tests
on 50 such frames (10 s); one config has one `input.rgb.num_frames`, so this
tests on the 25-frame clip at the middle of each video (`eval.num_clips=1`), a
departure to keep in mind when comparing. ImageNet start:
`--config.init_from=inception_v1:tf-slim:PATH`; default below. The recipe is
`i3d_jax.configs.paper_recipe` (see kinetics400_i3d.py).
"""
from __future__ import annotations

from i3d_jax.configs import kinetics400_config, parse_variant

IMAGENET = "inception_v1:tf-slim:runs/imagenet/inception_v1.ckpt"


def get_config(arg: str | None = None):
    variant = parse_variant(arg, __file__, init=("imagenet", "scratch"))
    return kinetics400_config(variant, {
        "dataset": "kinetics/400",
        "model.architecture": "convnet_lstm",
        "input.rgb.num_frames": 25, "input.rgb.stride": 5,
        "loss.endpoints": "LogitsPerTime",
        "eval.whole_video_frames": 0, "eval.num_clips": 1,
        "init_from": IMAGENET if variant["init"] == "imagenet" else "",
    })
