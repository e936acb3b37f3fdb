"""I3D fine-tuned on UCF-101 or HMDB-51 from a Kinetics-400 run: the paper's Table 4,
rows RGB-I3D, Flow-I3D and Two-Stream I3D, columns "Fixed" (`last_layer`: a new
classifier on the Kinetics features) and "Full-FT" (`full`: end to end), on each of
the three splits.

    i3d-jax train --workdir runs/ucf101_rgb_1 --config experiments/finetune.py:ucf101,rgb,1,full,gpu8

Argument (comma-separated, any order; the first of each is the default):
  dataset ucf101 | hmdb51
  stream  rgb | flow | rgb+flow
  split   1 | 2 | 3
  mode    full | last_layer
  preset  cpu | gpu8 | tpu_v5e_64

`init_from` is the Kinetics run of the same stream (`runs/i3d_rgb`, `runs/i3d_flow`,
`runs/i3d_rgb_flow`, trained with experiments/kinetics400_i3d.py; another with
`--config.init_from=DIR`); its 400-class classifier is replaced. The paper reports
split 1 for each row and column in Table 4; its best, Two-Stream I3D fine-tuned end to
end after ImageNet and Kinetics pre-training, reaches 98.0% on UCF-101 and 80.9% on
HMDB-51 averaged over the three splits (Table 5). The recipe is
`i3d_jax.configs.finetune_recipe` (up to 5k steps; what the paper does not state and
we chose is said there).
"""
from __future__ import annotations

from i3d_jax.configs import default_config, finetune_recipe, parse_variant


def get_config(arg: str | None = None):
    variant = parse_variant(arg, __file__, dataset=("ucf101", "hmdb51"),
                            stream=("rgb", "flow", "rgb+flow"), split=("1", "2", "3"),
                            mode=("full", "last_layer"))
    config = default_config(lock=False)
    finetune_recipe(config, variant)
    config.lock()
    return config
