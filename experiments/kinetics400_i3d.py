"""I3D on Kinetics-400: the paper's Table 3, rows "Two-Stream I3D" (its RGB, Flow and
RGB + Flow columns), from ImageNet-inflated Inception-v1 and from scratch.

    i3d-jax train --workdir runs/i3d_rgb --config experiments/kinetics400_i3d.py:rgb,imagenet,gpu8

Argument (comma-separated, any order; the first of each is the default):
  stream  rgb | flow | rgb+flow
  init    imagenet | scratch
  preset  cpu | gpu8 | tpu_v5e_64 (batch, mesh, dtype and log cadence only)

The paper's top-1 on the Kinetics-400 test set (Table 3):
  ImageNet-pretrained: RGB 71.1, Flow 63.4, RGB + Flow 74.2
  from scratch:        RGB 68.4, Flow 61.5, RGB + Flow 71.6

`imagenet` starts from an ImageNet Inception-v1 inflated by this package:
    i3d-jax inflate --from tf-slim inception_v1.ckpt --out runs/imagenet/i3d_rgb --num-classes 400
    i3d-jax inflate --from tf-slim inception_v1.ckpt --out runs/imagenet/i3d_flow --stream flow --num-classes 400
(`--config.init_from=DIR` for another place). `rgb+flow` trains both streams in one
run of `two_stream_i3d`, each stream with its own loss, as the paper trains them
separately, and evaluation averages their logits; two separate runs fused by
`i3d-jax eval --workdir RGB_RUN --fuse FLOW_RUN` give the same test. The ImageNet
start of `rgb+flow` is the 2D Inception-v1 itself
(`--config.init_from=inception_v1:tf-slim:PATH`; default below).

The recipe (`i3d_jax.configs.paper_recipe`): SGD, momentum 0.9, 110k steps, the
learning rate divided by 10 at 60k and 95k. The paper divides it "when the
validation loss saturated" and gives no steps, no batch size and no learning
rate: the boundaries, the batch of 256 (4 clips a GPU on the paper's 64 GPUs)
and the rate of 0.1 are ours (docs/scaling.md); the weight decay of 1e-7 is
pytorch-i3d's. 64-frame 224x224 clips at 25 fps for both streams; tested on the
whole video (250 frames), centre crop.
"""
from __future__ import annotations

from i3d_jax.configs import i3d_stream_values, kinetics400_config, parse_variant

INFLATED = {"rgb": "runs/imagenet/i3d_rgb", "flow": "runs/imagenet/i3d_flow",
            "rgb+flow": "inception_v1:tf-slim:runs/imagenet/inception_v1.ckpt"}


def get_config(arg: str | None = None):
    variant = parse_variant(arg, __file__, stream=("rgb", "flow", "rgb+flow"),
                            init=("imagenet", "scratch"))
    stream = variant["stream"]
    return kinetics400_config(variant, {
        "dataset": "kinetics/400" if stream == "rgb" else "kinetics/400_flow",
        **i3d_stream_values(stream),
        "init_from": INFLATED[stream] if variant["init"] == "imagenet" else "",
    })
