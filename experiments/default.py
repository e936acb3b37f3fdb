"""Every configuration key, declared once; its values are the main job's.

`i3d-jax train --workdir runs/demo` with no `--config` runs this: a narrow
I3D (a quarter of the paper's width: 0.78M parameters instead of 12.3M, the
same layers, padding and pooling) on the generated `synthetic_motion`
dataset (8 classes that only motion tells apart, 64x64 frames), 16-frame
56x56 RGB clips. These sizes were chosen so the whole job, the dataset
build and XLA's compile included, ends within 10 minutes on a 2-core CPU
while still having to learn motion: one frame of a clip says nothing of
its class.

The main job departs from the paper's recipe in three values, chosen from
runs of this job on a 2-core CPU: AdamW at 2e-3 and no dropout instead of
SGD with momentum 0.9 and I3D's dropout 0.5 (SGD at 0.05 with dropout
reached 52% top-1 in 600 steps; AdamW without it 86% in 400, 89.5% in
700, 93% in 1000: a quarter-width model on 1024 clips underfits rather
than overfits), and BatchNorm momentum 0.9 instead of 0.999 (with 0.999
the running averages still remember their start after 600 steps and
evaluation is at chance, 12.5%). The paper's own recipe is for its
experiment configs.

Experiments (`experiments/NAME.py`) start from `get_config()` here and
override values; they never add keys. Configs are locked, so
`--config.totl_steps=3` is refused naming the key.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg  # the main job has no variants
    config = ml_collections.ConfigDict()

    # Data: a TFDS name ("synthetic_motion/rgb", "kinetics/400", "ucf101/1_flow").
    # data_dir "" is TFDS's default (TFDS_DATA_DIR or ~/tensorflow_datasets).
    # A dataset that needs no manual download (synthetic_motion) is built on
    # first use; the others say how to build them.
    config.dataset = "synthetic_motion/rgb"
    config.data_dir = ""
    config.train_split = "train"
    config.eval_split = "test"

    # The model: `build_model(architecture, ...)`. num_classes 0 takes the
    # dataset's; an unset (None) field keeps the architecture's own default.
    config.model = ml_collections.ConfigDict()
    config.model.architecture = "i3d"
    config.model.num_classes = 0
    config.model.width_multiplier = 0.25
    config.model.dropout_rate = 0.0  # None keeps the architecture's (I3D: 0.5)
    config.model.batch_norm_scale = False
    # BatchNorm's running averages: None keeps TF's 0.999, which needs thousands
    # of steps to forget its start; the main job's 600 steps want 0.9.
    config.model.batch_norm_momentum = 0.9
    # Compute dtype: "bfloat16" computes in bf16 with float32 master weights.
    config.dtype = "float32"

    # The input. `streams` names what the model is fed, comma-separated:
    # "rgb", "flow" or "rgb,flow" (a dict {"rgb", "flow"} for two-stream models).
    # Each stream samples its own frames: `num_frames` frames `stride` apart,
    # starting `offset` frames into the clip; the clip's random start, crop
    # and flip are shared by every stream.
    config.input = ml_collections.ConfigDict()
    config.input.streams = "rgb"
    config.input.crop_size = 56
    config.input.resize_short_side = config_dict.placeholder(int)  # None: frames as stored
    config.input.flip = True
    config.input.shuffle_buffer = 64
    config.input.threads = 0  # tf.data's private thread pool; 0: TF's default
    for stream in ("rgb", "flow"):
        config.input[stream] = ml_collections.ConfigDict(
            {"num_frames": 16, "stride": 1, "offset": 0})

    # Training.
    config.seed = 0
    config.total_steps = 1000
    config.batch_size = 16  # global, over every process and device
    # Micro-batches per step (gradients summed before one update): a batch
    # larger than memory allows, with the same result as one big batch when
    # BatchNorm is frozen.
    config.grad_accum_steps = 1
    # "global": statistics of the whole (global) batch, as one device would;
    # "per_device": each device's shard on its own (cheaper on big meshes);
    # "frozen": running averages only, never updated (small-batch fine-tuning).
    config.batch_norm = "global"
    # "all", or "classifier": the last layer (every `Logits` module) alone, as the
    # paper's fixed-feature transfer; the trunk gets no gradient and no update,
    # and needs batch_norm "frozen".
    config.trainable = "all"

    config.loss = ml_collections.ConfigDict()
    config.loss.label_smoothing = 0.0
    # Endpoints that get a loss, comma-separated, averaged; "" means the
    # model's logits. "rgb_logits,flow_logits" trains a two-stream model's
    # streams separately as the paper does; "LogitsPerTime" puts a loss on
    # every step of ConvNet+LSTM.
    config.loss.endpoints = ""

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adamw"  # "sgd" (momentum, as the paper) or "adamw"
    config.optimizer.momentum = 0.9  # sgd
    config.optimizer.nesterov = False  # sgd
    config.optimizer.b1 = 0.9  # adamw
    config.optimizer.b2 = 0.999  # adamw
    config.optimizer.weight_decay = 1e-4  # on kernels only, not on biases or BatchNorm
    config.optimizer.grad_clip_norm = 0.0  # 0: no clipping

    # Learning rate: "constant", "piecewise" (times `factor` at each of
    # `boundaries`), or "cosine" (to 0 at total_steps); after a linear warmup.
    config.schedule = ml_collections.ConfigDict()
    config.schedule.name = "cosine"
    config.schedule.learning_rate = 0.002
    config.schedule.warmup_steps = 30
    config.schedule.boundaries = (0,)  # steps, piecewise only
    config.schedule.factor = 0.1  # piecewise only

    # Start from other weights (never a resume): "kinetics400-rgb", a
    # checkpoint from `i3d-jax convert` / `inflate`, or another training
    # workdir. A classifier of another size is re-initialised.
    config.init_from = ""

    config.log_every_steps = 50
    config.checkpoint_every_steps = 200
    config.keep_checkpoints = 2
    config.eval_every_steps = 0  # 0: only at the end

    # Evaluation: each video once, as `num_clips` evenly spaced clips x
    # `num_crops` crops (1 centre, or 3), or whole (`whole_video_frames`
    # frames from the start, looped when shorter; 0 to use clips).
    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 32  # global
    config.eval.num_clips = 1
    config.eval.num_crops = 1
    config.eval.whole_video_frames = 32

    # The device mesh: data x fsdp devices; -1 takes all remaining devices.
    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1
    config.mesh.fsdp = 1

    return config
