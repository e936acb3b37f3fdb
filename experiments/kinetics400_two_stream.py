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
below. The recipe is `i3d_jax.configs.paper_recipe` (see kinetics400_i3d.py for
what the paper does not state and we chose).
"""
from __future__ import annotations

from i3d_jax.configs import kinetics400_config, parse_variant

IMAGENET = "inception_v1:tf-slim:runs/imagenet/inception_v1.ckpt"


def get_config(arg: str | None = None):
    variant = parse_variant(arg, __file__, init=("imagenet", "scratch"))
    return kinetics400_config(variant, {
        "dataset": "kinetics/400_flow",
        "model.architecture": "two_stream",
        "input.streams": "rgb,flow",
        "input.rgb.num_frames": 1, "input.rgb.offset": 5,
        "input.flow.num_frames": 10,
        "loss.endpoints": "rgb_logits,flow_logits",
        "init_from": IMAGENET if variant["init"] == "imagenet" else "",
    })
