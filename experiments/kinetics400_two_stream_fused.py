"""3D-Fused Two-Stream on Kinetics-400: the paper's Table 3, row "3D-Fused" (RGB +
Flow only: the streams are fused inside the network), from ImageNet-pretrained
Inception-v1 and from scratch.

    i3d-jax train --workdir runs/fused --config experiments/kinetics400_two_stream_fused.py:imagenet,gpu8

Argument (comma-separated; the first of each is the default):
  init    imagenet | scratch
  preset  cpu | gpu8 | tpu_v5e_64

The paper's top-1 on the Kinetics-400 test set (Table 3): 67.2 ImageNet-pretrained,
62.7 from scratch.

Input (the paper's Table 1): 5 RGB frames 10 apart and the 50 flow frames they
span; tested on the whole video as back-to-back such views (250 frames),
predictions averaged. ImageNet start: `--config.init_from=inception_v1:tf-slim:PATH`
(both Inception-v1 trunks; the 3D fusion layers are new); default below. The
recipe is `i3d_jax.configs.paper_recipe` (see kinetics400_i3d.py).
"""
from __future__ import annotations

from i3d_jax.configs import kinetics400_config, parse_variant

IMAGENET = "inception_v1:tf-slim:runs/imagenet/inception_v1.ckpt"


def get_config(arg: str | None = None):
    variant = parse_variant(arg, __file__, init=("imagenet", "scratch"))
    return kinetics400_config(variant, {
        "dataset": "kinetics/400_flow",
        "model.architecture": "two_stream_fused",
        "input.streams": "rgb,flow",
        "input.rgb.num_frames": 5, "input.rgb.stride": 10, "input.rgb.offset": 5,
        "input.flow.num_frames": 50,
        "init_from": IMAGENET if variant["init"] == "imagenet" else "",
    })
