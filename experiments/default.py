"""Every configuration key, declared once with its meaning.

The values here are what a key means when a config says nothing of it:
neutral settings (the model's own dropout and BatchNorm constants, no weight
decay, no clipping, XLA's kernels chosen automatically, every device on the
data axis) and, for what every run must choose (the dataset, its length, the
batch, the learning rate), empty values that the trainer refuses. Nothing
here is a recipe: the main job is `synthetic_demo.py` (what `i3d-jax train`
runs without `--config`), and each paper experiment states its own recipe in
its file.

A config starts from `get_config()` here and sets values; it never adds keys.
Configs are locked, so `--config.totl_steps=3` is refused naming the key.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg  # the declarations have no variants
    config = ml_collections.ConfigDict()

    # Data: a TFDS name ("synthetic_motion/rgb", "kinetics/400", "ucf101/1_flow").
    # data_dir "" is TFDS's default (TFDS_DATA_DIR or ~/tensorflow_datasets).
    # A dataset that needs no manual download (synthetic_motion) is built on
    # first use; the others say how to build them (docs/datasets.md).
    config.dataset = ""
    config.data_dir = ""
    config.train_split = "train"
    config.eval_split = "test"

    # The model: `build_model(architecture, ...)`. num_classes 0 takes the
    # dataset's; an unset (None) field keeps the architecture's own default.
    config.model = ml_collections.ConfigDict()
    config.model.architecture = "i3d"
    config.model.num_classes = 0
    config.model.width_multiplier = 1.0  # below 1: narrower layers (tests, the demo)
    config.model.dropout_rate = config_dict.placeholder(float)  # None: the architecture's (I3D: 0.5)
    config.model.batch_norm_scale = False
    # BatchNorm's running averages: None keeps TF's 0.999, which needs thousands
    # of steps to forget its start (a short run wants less).
    config.model.batch_norm_momentum = config_dict.placeholder(float)
    # What the model computes with (i3d_jax.kernels): "xla", lax's own operations
    # (what GPUs and TPUs run); "cpu", the forms XLA:CPU runs fast; "auto", cpu
    # on a CPU backend where this jaxlib was tested with them, else xla. The run
    # logs its choice and writes it to config.json.
    config.model.kernels = "auto"
    # Compute dtype: "bfloat16" computes in bf16 with float32 master weights.
    config.dtype = "float32"

    # The input. `streams` names what the model is fed, comma-separated:
    # "rgb", "flow" or "rgb,flow" (a dict {"rgb", "flow"} for two-stream models).
    # Each stream samples its own frames: `num_frames` frames `stride` apart,
    # starting `offset` frames into the clip; the clip's random start, crop
    # and flip are shared by every stream.
    config.input = ml_collections.ConfigDict()
    config.input.streams = "rgb"
    config.input.crop_size = 224
    config.input.resize_short_side = config_dict.placeholder(int)  # None: frames as stored
    config.input.flip = True
    config.input.shuffle_buffer = 1024
    config.input.threads = 0  # tf.data's private thread pool; 0: TF's default
    # glibc keeps freed blocks for the next clip instead of faulting fresh pages in
    # (i3d_jax/host_memory.py; the whole process's setting, 10-20% more clips/s).
    config.input.keep_freed_memory = True
    for stream in ("rgb", "flow"):
        config.input[stream] = ml_collections.ConfigDict(
            {"num_frames": 64, "stride": 1, "offset": 0})

    # Training.
    config.seed = 0
    config.total_steps = 0  # every run sets it
    config.batch_size = 0  # global, over every process and device; every run sets it
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
    config.optimizer.name = "sgd"  # "sgd" (momentum, as the paper) or "adamw"
    config.optimizer.momentum = 0.9  # sgd
    config.optimizer.nesterov = False  # sgd
    config.optimizer.b1 = 0.9  # adamw
    config.optimizer.b2 = 0.999  # adamw
    config.optimizer.weight_decay = 0.0  # on kernels only, not on biases or BatchNorm
    config.optimizer.grad_clip_norm = 0.0  # 0: no clipping

    # Learning rate: "constant", "piecewise" (times `factor` at each of
    # `boundaries`), or "cosine" (to 0 at total_steps); after a linear warmup.
    config.schedule = ml_collections.ConfigDict()
    config.schedule.name = "constant"
    config.schedule.learning_rate = 0.0  # every run sets it
    config.schedule.warmup_steps = 0
    config.schedule.boundaries = (0,)  # steps, piecewise only
    config.schedule.factor = 0.1  # piecewise only

    # Start from other weights (never a resume): "kinetics400-rgb", a
    # checkpoint from `i3d-jax convert` / `inflate`, or another training
    # workdir. A classifier of another size is re-initialised.
    config.init_from = ""

    # A resume compares the config with the run's config.json: changes to how long,
    # how fast or how often are logged and accepted; changes that would misread the
    # saved state (batch, seed, dataset, sampling, model, loss) are refused unless
    # this is True (docs/training.md, "What survives what").
    config.resume_with_changes = False

    config.log_every_steps = 100
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3
    config.eval_every_steps = 0  # 0: only at the end

    # Evaluation: each video once, as `num_clips` evenly spaced clips x
    # `num_crops` crops (1 centre, or 3), or whole (`whole_video_frames`
    # frames from the start, looped when shorter; 0 to use clips).
    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 16  # global
    config.eval.num_clips = 1
    config.eval.num_crops = 1
    config.eval.whole_video_frames = 0

    # The device mesh: data x fsdp devices; -1 takes all remaining devices.
    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1
    config.mesh.fsdp = 1

    return config
