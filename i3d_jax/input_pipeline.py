"""The tf.data input pipeline: clips from the TFDS video datasets, on the CPU.

Training (`train_dataset`): an endless stream of batches. Each example gets
a random start and `num_frames` frames `stride` apart (short videos loop;
each stream may sample its own frames, `ClipOptions.per_stream`), a
random `crop_size` square, and a left-right flip half of the time. RGB and
flow always get the same frames, crop and flip (flipping flow negates its x
channel): every random choice for an example comes from one stateless seed,
derived from the pipeline seed and the example's position in one global
order of the split, so the stream is reproducible from the seed. That order
does not depend on the number of processes: each process reads every record
of the split in the order the seed gives and keeps its share of each global
batch (process p of n: rows p*B to (p+1)*B - 1 of every n*B), so a run on
2 hosts trains on the global batches of a run on 1, and a checkpointed
position continues on any number of hosts. The cost: every process reads
(but neither parses nor decodes) the records of the others, n times the
bytes from storage in all (`docs/data.md`).

Evaluation (`eval_dataset`): every video once, either whole (up to
`max_frames`, looped when shorter, centre crop) or as `num_clips` evenly
spaced clips times 1 or 3 crops. Each process reads its own part of the
split; the last batch is padded and `mask` marks the real videos, so every
process runs the same number of steps.

Batches are dicts of numpy arrays (through `DatasetIterator`):
  rgb   float [B, T, S, S, 3] in [-1, 1]       (train)
        float [B, V, T, S, S, 3]               (eval; V views = clips x crops)
  flow  float [B, (V,) T, S, S, 2] in [-1, 1]  (x then y; +-20 px -> +-1)
or, with `ClipOptions.dtype="uint8"` (what the trainer asks for), the same frames as
uint8 0..255, which the jitted step scales on the device (`streams.network_range`):
a quarter of the bytes to convert, batch, copy and hold on the host.
  label int32 [B]
  flip  bool [B]                               (train, `ClipOptions.flip_on_device`:
                                                clips to mirror in the jitted step)
  mask  bool [B], video_id bytes [B]           (eval only)

`DatasetIterator.save` / `.restore` checkpoint the position in the stream
(TF's symbolic iterator checkpoints: a few KB plus the shuffle buffer); each
process saves its own, and the last process's restores into any process of
a run with any process count (`train_dataset`).
"""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

import i3d_jax.quiet_tf  # noqa: E402,F401  (before anything imports TF)

import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from i3d_jax import datasets as project_datasets  # noqa: E402  (registers the builders)
from i3d_jax.clip_ops import (  # noqa: E402
    CHANNELS, StreamSampling, _check_crop, _decode_frames, _flipped, _frame_size, _resized,
    _resized_size, _to_network, decoded_frame_list, evenly_spaced_starts, sample_clip_start,
    stream_indices)

project_datasets.hide_gpus_from_tf()

MODALITIES = ("rgb", "flow")
FEATURE = {"rgb": "video", "flow": "flow"}


# --------------------------------------------------------------------------
# Options


@dataclasses.dataclass(frozen=True)
class ClipOptions:
    """What a clip looks like: frames, spacing, crop, streams.

    Every stream samples `num_frames` frames `stride` apart unless
    `per_stream` gives it its own `StreamSampling`, as (modality, sampling)
    pairs: Two-Stream sees 1 RGB frame in the middle of 10 flow frames,
    `(("rgb", StreamSampling(1, offset=5)), ("flow", StreamSampling(10)))`.
    The start, crop and flip are the clip's, shared by all its streams.
    """

    num_frames: int = 64
    stride: int = 1
    crop_size: int = 224
    # Resize frames so their short side is this before cropping (None: as stored).
    resize_short_side: int | None = None
    modalities: tuple[str, ...] = ("rgb",)
    dtype: str = "float32"  # or "bfloat16"; "uint8": 0..255, scaled on the device
    per_stream: tuple[tuple[str, StreamSampling], ...] = ()
    # Training clips leave unmirrored, with `flip` bool [B] saying which ones the
    # jitted steps mirror (`streams.model_inputs`): mirroring a 64x224x224 clip cost
    # the host 4.5 ms of its 30 (natural frames, 1 thread), the device next to nothing.
    flip_on_device: bool = False

    def __post_init__(self):
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown or not self.modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, "
                             f"got {self.modalities}")
        if self.num_frames < 1 or self.stride < 1 or self.crop_size < 1:
            raise ValueError(f"num_frames, stride and crop_size must be positive: {self}")
        extra = {m for m, _ in self.per_stream} - set(self.modalities)
        if extra:
            raise ValueError(f"per_stream names {sorted(extra)}, not among modalities "
                             f"{self.modalities}")

    def sampling(self, modality: str) -> StreamSampling:
        return dict(self.per_stream).get(modality, StreamSampling(self.num_frames, self.stride))

    @property
    def span(self) -> int:
        """Frames a clip covers: the longest span of its streams."""
        return max(self.sampling(m).span for m in self.modalities)

    def whole_video_indices(self, modality: str, num_frames: int):
        """[1, T] frame indices of a stream's whole-video view of `num_frames` frames.

        Streams that share one sampling see every frame. Streams sampled
        differently (Two-Stream, 3D-Fused) see as many back-to-back clips as fit,
        each sampled as in training, so their frame counts keep the relation
        their model needs (10 flow frames per RGB frame)."""
        samplings = {self.sampling(m) for m in self.modalities}
        if len(samplings) == 1:
            return tf.range(num_frames)[None]
        own, span = self.sampling(modality), self.span
        clips = max(1, num_frames // span)
        steps = own.offset + tf.range(own.num_frames) * own.stride
        return tf.reshape(tf.range(clips)[:, None] * span + steps[None, :], [1, -1])


# --------------------------------------------------------------------------
# Reading


def get_builder(dataset, data_dir=None) -> tfds.core.DatasetBuilder:
    """A prepared builder from a name ("synthetic_motion", "kinetics/400") or a builder."""
    if isinstance(dataset, tfds.core.DatasetBuilder):
        return dataset
    builder = project_datasets.builder(dataset, data_dir=data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"dataset {dataset!r} is not prepared in {builder.data_dir}; build it first "
            f"(tfds build data/{dataset.split('/')[0]} --data_dir=...)")
    return builder


def _process_info(process_index, process_count):
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    return process_index, process_count


def process_split(split: str, process_index: int, process_count: int) -> str:
    """This process's part of `split`: contiguous, sizes differ by at most one."""
    if process_count == 1:
        return split
    return tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]


def _check_modalities(builder, modalities):
    missing = [m for m in modalities if FEATURE[m] not in builder.info.features]
    if missing:
        raise ValueError(f"{builder.info.full_name} has no {missing} (features: "
                         f"{sorted(builder.info.features)}); build a *_flow config for flow")


def _wanted_features(modalities):
    # Only what the clips need, frames left encoded: a clip decodes just its own
    # frames, and only its crop of each JPEG.
    return [FEATURE[m] for m in modalities] + ["label", "video_id"]


def _decoders(builder, modalities):
    wanted = _wanted_features(modalities)
    return tfds.decode.PartialDecoding(
        {name: builder.info.features[name] for name in wanted},
        decoders={FEATURE[m]: tfds.decode.SkipDecoding() for m in modalities})


def _read(builder, split, *, modalities):
    """`split`'s examples in the order of its files (frames left encoded)."""
    return builder.as_dataset(split=split, shuffle_files=False,
                              read_config=tfds.ReadConfig(try_autocache=False),
                              decoders=_decoders(builder, modalities))


def record_parser(builder, modalities):
    """serialized example -> {frames of each modality [N] (encoded), "label", "video_id"}.

    `tf.io.parse_single_example` on what the clips need, as TFDS serializes it (a
    video: its encoded frames, a bytes list); TFDS's own `deserialize_example` costs
    a millisecond more per record (natural frames, 1 thread: 1.5 against 0.46 ms)."""
    spec = {}
    for name in _wanted_features(modalities):
        info = builder.info.features[name].get_serialized_info()
        if info.shape == ():
            spec[name] = tf.io.FixedLenFeature([], info.dtype)
        elif info.shape == (None,):
            spec[name] = tf.io.RaggedFeature(info.dtype)
        else:
            raise ValueError(f"{builder.info.full_name}: feature {name!r} is stored as "
                             f"{info.shape}; expected a scalar or a list (a video's frames)")

    def parse(record):
        return tf.io.parse_single_example(record, spec)

    return parse


def global_records(builder, split: str, *, seed: int, shuffle_buffer: int) -> tf.data.Dataset:
    """`split`'s serialized examples, endlessly, in one order given by `seed` alone:
    each epoch's files in a seeded order, read 16 at a time record by record, through
    a `shuffle_buffer` shuffle. The records stay unparsed so that a process can drop the
    ones it does not keep for the price of reading them."""
    if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
        raise ValueError(f"{builder.info.full_name} in {builder.data_dir} is stored as "
                         f"{builder.info.file_format.value}; training reads TFRecord files "
                         "(build it with the default file format)")
    instructions = builder.info.splits[split].file_instructions
    files = tf.data.Dataset.from_tensor_slices((
        [os.fspath(i.filename) for i in instructions],
        tf.constant([i.skip for i in instructions], tf.int64),
        tf.constant([i.take for i in instructions], tf.int64)))
    files = files.shuffle(len(instructions), seed=seed, reshuffle_each_iteration=True)
    records = files.interleave(
        lambda name, skip, take: tf.data.TFRecordDataset(name).skip(skip).take(take),
        # Sequential: TF 2.21 restores a parallel interleave under a shuffle from a
        # symbolic checkpoint only sometimes ("Expected 1 components but got 0").
        # Reading records is cheap beside decoding them from local disk; from remote
        # storage, measure before raising a run's thread count.
        cycle_length=min(16, len(instructions)), block_length=1)
    if shuffle_buffer > 1:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return records.repeat()  # each epoch whole, and in its own order


# --------------------------------------------------------------------------
# Training clips and evaluation views (one example; the operations in `clip_ops`)


def _clip_choices(example, seed, options: ClipOptions, flip: bool):
    """One training clip's random choices, all from `seed` [2]: each stream's frame
    indices, the crop's top and left (on the resized frames), the flip; with the
    frames' stored height and width."""
    time_seed, y_seed, x_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=4))
    first = options.modalities[0]
    encoded = example[FEATURE[first]]
    num_available = tf.shape(encoded)[0]
    start = sample_clip_start(num_available, options.span, time_seed)
    indices = {m: stream_indices(start, num_available, options.sampling(m))
               for m in options.modalities}
    height, width = _frame_size(encoded, first)
    size = options.crop_size
    flipped = (tf.random.stateless_uniform([], flip_seed) < 0.5) if flip else tf.constant(False)
    if options.resize_short_side is None:
        crop_h, crop_w = height, width
    else:
        crop_h, crop_w, _ = _resized_size(height, width, options.resize_short_side)
    with tf.control_dependencies([_check_crop(crop_h, crop_w, size, example["video_id"])]):
        top = tf.random.stateless_uniform([], y_seed, 0, crop_h - size + 1, dtype=tf.int32)
        left = tf.random.stateless_uniform([], x_seed, 0, crop_w - size + 1, dtype=tf.int32)
    return indices, top, left, flipped, (height, width)


def train_clip(example, seed, options: ClipOptions, flip: bool = True):
    """One training clip from an undecoded example; every random choice from `seed` [2]."""
    indices, top, left, flipped, (height, width) = _clip_choices(example, seed, options, flip)
    size = options.crop_size
    dtype = tf.dtypes.as_dtype(options.dtype)
    out = {}
    for m in options.modalities:
        encoded = example[FEATURE[m]]
        if options.resize_short_side is None:
            frames = _decode_frames(encoded, m, tf.stack([top, left, size, size]), indices[m])
        else:
            frames, _, _ = _resized(_decode_frames(encoded, m, indices=indices[m]), m,
                                    height, width, options.resize_short_side)
            frames = frames[:, top:top + size, left:left + size]
        network = _to_network(frames, dtype)
        if not options.flip_on_device:
            network = tf.cond(flipped, lambda c=network, m=m: _flipped(c, m),
                              lambda c=network: c)
        out[m] = tf.ensure_shape(network,
                                 [options.sampling(m).num_frames, size, size, CHANNELS[m]])
    out["label"] = tf.cast(example["label"], tf.int32)
    if options.flip_on_device:
        out["flip"] = flipped
    return out


# A batch's frames decode into one stack per stream when it has at most this many
# (batch size x frames of every stream); each decode op is traced, so more would
# slow the pipeline's start.
MAX_BATCH_FRAMES = 2048


def assembles_batches(options: ClipOptions, batch_size: int, flip: bool = True) -> bool:
    """Whether `train_dataset` builds each batch at once (`train_batch`): frames cropped
    as they decode (no resize) and mirrored on the device (or never)."""
    frames = batch_size * sum(options.sampling(m).num_frames for m in options.modalities)
    return (options.resize_short_side is None and (options.flip_on_device or not flip)
            and frames <= MAX_BATCH_FRAMES)


def train_batch(positions, records, parse, seed: int, options: ClipOptions, flip: bool = True):
    """`train_clip` of each of a batch's undecoded records [B] (at `positions` [B] of the
    global order), its frames decoded straight into one stack per stream: the decoded
    pixels are copied once, where clips stacked one by one and then batched copy them
    twice (natural frames, 1 thread, 4 alternating runs: 0.79 -> 0.93 of the decode
    limit measured in the same process). Only where `assembles_batches`."""
    batch_size = records.shape[0]
    size = options.crop_size
    frames = {m: [] for m in options.modalities}
    labels, flips = [], []
    for k in range(batch_size):
        example = parse(records[k])
        indices, top, left, flipped, _ = _clip_choices(
            example, example_seed(seed, positions[k]), options, flip)
        window = tf.stack([top, left, size, size])
        for m in options.modalities:
            frames[m] += decoded_frame_list(example[FEATURE[m]], m, window, indices[m])
        labels.append(tf.cast(example["label"], tf.int32))
        flips.append(flipped)
    out = {m: tf.reshape(_to_network(tf.stack(frames[m]), tf.dtypes.as_dtype(options.dtype)),
                         [batch_size, options.sampling(m).num_frames, size, size, CHANNELS[m]])
           for m in options.modalities}
    out["label"] = tf.stack(labels)
    if options.flip_on_device:
        out["flip"] = tf.stack(flips)
    return out


def _crop_offsets(height, width, size, num_crops):
    """[num_crops, 2] (top, left): the centre, or 3 crops along the longer side."""
    centre = tf.stack([(height - size) // 2, (width - size) // 2])
    if num_crops == 1:
        return centre[None]
    if num_crops != 3:
        raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
    along_height = height > width
    longest = tf.where(along_height, height, width)
    positions = tf.stack([0, (longest - size) // 2, longest - size])
    return tf.where(along_height,
                    tf.stack([positions, tf.fill([3], centre[1])], axis=1),
                    tf.stack([tf.fill([3], centre[0]), positions], axis=1))


def eval_views(example, options: ClipOptions, *, num_clips: int, num_crops: int,
               whole_video_frames: int | None):
    """All views of one video: [V, T, S, S, C] per modality, V = clips x crops.

    `whole_video_frames`: one view of the first that many frames (looping a
    shorter video), instead of `num_clips` clips; see
    `ClipOptions.whole_video_indices` for streams sampled at different rates
    (Two-Stream: 25 RGB frames among 250 flow frames).
    """
    first = options.modalities[0]
    encoded = {m: example[FEATURE[m]] for m in options.modalities}
    num_available = tf.shape(encoded[first])[0]
    if whole_video_frames:
        starts, num_clips = tf.zeros([1], tf.int32), 1
    else:
        starts = evenly_spaced_starts(num_available, options.span, num_clips)
    size = options.crop_size
    dtype = tf.dtypes.as_dtype(options.dtype)
    height, width = _frame_size(encoded[first], first)
    out = {}
    for m in options.modalities:
        if whole_video_frames:
            indices = options.whole_video_indices(m, whole_video_frames) % num_available
        else:
            indices = stream_indices(starts, num_available, options.sampling(m))
        clip_frames = indices.shape[1]
        # Decode each needed frame once, however many views share it.
        unique, position = tf.unique(tf.reshape(indices, [-1]))
        frames = _decode_frames(tf.gather(encoded[m], unique), m)
        h, w = height, width
        if options.resize_short_side is not None:
            frames, h, w = _resized(frames, m, height, width, options.resize_short_side)
        with tf.control_dependencies([_check_crop(h, w, size, example["video_id"])]):
            offsets = _crop_offsets(h, w, size, num_crops)
        clips = tf.reshape(tf.gather(frames, position), tf.concat(
            [[num_clips, clip_frames], tf.shape(frames)[1:]], 0))
        views = [clips[:, :, offsets[c, 0]:offsets[c, 0] + size, offsets[c, 1]:offsets[c, 1] + size]
                 for c in range(num_crops)]
        views = tf.reshape(tf.stack(views, axis=1),
                           [num_clips * num_crops, clip_frames, size, size, CHANNELS[m]])
        out[m] = _to_network(views, dtype)
    out["label"] = tf.cast(example["label"], tf.int32)
    out["video_id"] = example["video_id"]
    out["mask"] = tf.constant(True)
    return out


# --------------------------------------------------------------------------
# Datasets


def _options(threads: int | None):
    options = tf.data.Options()
    options.deterministic = True
    # Checkpoints keep positions, not the decoded clips in flight.
    options.experimental_symbolic_checkpoint = True
    # TF 2.21 saves a fused shuffle-and-repeat over an interleave without the
    # interleave's open files: restoring fails ("Failed to restore ...
    # ShuffleAndRepeat::Interleave[0]::FiniteTake") or the save never returns.
    options.experimental_optimization.shuffle_and_repeat_fusion = False
    if threads:
        options.threading.private_threadpool_size = threads
    return options


def example_seed(seed: int, position):
    """The stateless seed [2] of the example at `position` of the global order."""
    return tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64),
                                                   tf.cast(position, tf.int64))


def train_dataset(dataset, *, batch_size: int, options: ClipOptions = ClipOptions(),
                  split: str = "train", data_dir=None, seed: int = 0, shuffle_buffer: int = 64,
                  flip: bool = True, process_index: int | None = None,
                  process_count: int | None = None, threads: int | None = None,
                  prefetch: int = 2) -> tf.data.Dataset:
    """Endless training batches, this process's `batch_size` rows of each global batch
    of `batch_size` x `process_count` clips; the global batches depend on `seed` only.

    The iterator's checkpoint (`DatasetIterator.save`) is where the global order
    stood after this process's last row. The last process's is at the end of a global
    batch: it restores into every process of a run with any process count (the same
    dataset, options, seed and global batch), and the stream continues with the next
    global batch. (The others' are inside one: they restore only into themselves.)"""
    builder = get_builder(dataset, data_dir)
    _check_modalities(builder, options.modalities)
    process_index, process_count = _process_info(process_index, process_count)
    parse = record_parser(builder, options.modalities)
    global_batch = batch_size * process_count
    ds = global_records(builder, split, seed=seed, shuffle_buffer=shuffle_buffer).enumerate()
    ds = ds.filter(lambda position, _: position % global_batch // batch_size == process_index)

    if assembles_batches(options, batch_size, flip):
        ds = ds.batch(batch_size, drop_remainder=True).map(
            lambda positions, records: train_batch(positions, records, parse, seed, options, flip),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        def transform(position, record):
            return train_clip(parse(record), example_seed(seed, position), options, flip)

        ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(prefetch).with_options(_options(threads))


def eval_num_steps(builder, split: str, batch_size: int, process_count: int) -> int:
    """Batches every process runs: enough for the largest process's share."""
    largest = max(builder.info.splits[process_split(split, p, process_count)].num_examples
                  for p in range(process_count))
    return max(1, math.ceil(largest / batch_size))


def eval_dataset(dataset, *, batch_size: int, options: ClipOptions = ClipOptions(),
                 split: str = "test", data_dir=None, num_clips: int = 1, num_crops: int = 1,
                 whole_video_frames: int | None = 250, process_index: int | None = None,
                 process_count: int | None = None, threads: int | None = None,
                 prefetch: int = 2) -> tuple[tf.data.Dataset, int]:
    """Every video of this process's part of `split` once, padded to the common step count.

    `whole_video_frames` (default 250): one view of the whole video up to that
    many frames; None: `num_clips` evenly spaced clips of `options.num_frames`.
    `num_crops`: 1 (centre) or 3 (along the longer side). Returns
    (dataset, number of batches), the same number on every process.
    """
    if num_crops not in (1, 3):
        raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
    builder = get_builder(dataset, data_dir)
    _check_modalities(builder, options.modalities)
    process_index, process_count = _process_info(process_index, process_count)
    steps = eval_num_steps(builder, split, batch_size, process_count)
    own_split = process_split(split, process_index, process_count)
    count = builder.info.splits[own_split].num_examples
    ds = _read(builder, own_split, modalities=options.modalities)
    ds = ds.map(lambda e: eval_views(e, options, num_clips=num_clips, num_crops=num_crops,
                                     whole_video_frames=whole_video_frames),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    padding = steps * batch_size - count
    if padding:
        blank = tf.nest.map_structure(
            lambda spec: tf.zeros(spec.shape, spec.dtype), ds.element_spec)
        blank.update(label=tf.constant(-1, tf.int32), mask=tf.constant(False),
                     video_id=tf.constant(b""))
        ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat(padding))
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(prefetch).with_options(_options(threads)), steps


# --------------------------------------------------------------------------
# Iteration and checkpoints


class DatasetIterator:
    """numpy batches (read-only arrays) from a tf.data dataset, with a checkpointable
    position.

    `save(prefix)` writes TF checkpoint files `prefix.index` and
    `prefix.data-*` (each process its own prefix, e.g.
    `{workdir}/input/process_{index}/step_{step}`); `restore(prefix)` moves a
    fresh iterator of the same pipeline (same dataset, options and seed) to
    that position, so the stream continues exactly where it was saved.
    """

    def __init__(self, dataset: tf.data.Dataset):
        self._iterator = iter(dataset)
        self._checkpoint = tf.train.Checkpoint(iterator=self._iterator)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = next(self._iterator)
        # Read-only views of TF's buffers: `.numpy()` copies them (77 MB a batch of 8
        # RGB clips, a core's 10-40 ms that the pipeline's threads lacked).
        return tf.nest.map_structure(np.asarray, batch)

    def save(self, prefix) -> str:
        os.makedirs(os.path.dirname(os.fspath(prefix)) or ".", exist_ok=True)
        return self._checkpoint.write(os.fspath(prefix))

    def restore(self, prefix) -> None:
        """Raises LookupError where the pipeline that saved `prefix` was built
        differently (other stages); the iterator is then spent."""
        try:
            self._checkpoint.read(os.fspath(prefix)).assert_consumed()
        except tf.errors.NotFoundError as error:
            reason = error.message.split("}} ")[-1].splitlines()[0]
            raise LookupError(f"{prefix}: saved by an input pipeline built differently from "
                              f"this one ({reason})") from error
