"""The tf.data pipeline on a tiny dataset whose pixels say where and when they are from.

RGB frame t of video v has R = 4 x (column), G = 4 x (row), B = 6 x t; its
flow has x = 64 + 2 x (column) and y = 64 + 4 x t. After cropping, flipping
and scaling, both streams must still name the same columns, rows and frames.
"""
import dataclasses

import numpy as np
import pytest
import tensorflow_datasets as tfds

from i3d_jax import clip_ops
from i3d_jax import input_pipeline as ip
from i3d_jax.datasets.video_builder import VideoBuilderConfig, VideoDatasetBuilder, make_example

HEIGHT, WIDTH = 40, 56
LENGTHS = (5, 9, 20, 40, 12, 30, 7)  # one video per label


@dataclasses.dataclass(frozen=True)
class CoordinateClip:
    video_id: str
    label: int
    num_frames: int


def coordinate_frames(num_frames):
    t, y, x = np.meshgrid(np.arange(num_frames), np.arange(HEIGHT), np.arange(WIDTH), indexing="ij")
    rgb = np.stack([4 * x, 4 * y, 6 * t], -1).astype(np.uint8)
    flow = np.stack([64 + 2 * x, 64 + 4 * t], -1).astype(np.uint8)
    return rgb, flow


def encode_coordinate_clip(clip):
    rgb, flow = coordinate_frames(clip.num_frames)
    example = make_example(video_id=clip.video_id, label=clip.label, label_name=f"v{clip.label}",
                           frames=rgb[:, :1, :1], source_fps=25.0, jpeg_quality=100, flow_u8=flow)
    # Full-resolution colour (no 4:2:0 chroma subsampling), so colours keep coordinates.
    example["video"] = [_jpeg_444(frame) for frame in rgb]
    return example


def _jpeg_444(frame):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=100, subsampling=0)
    return buffer.getvalue()


class CoordinateVideos(VideoDatasetBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [VideoBuilderConfig(name="flow", with_flow=True)]

    def _info(self):
        info = self.video_info()
        info.features["label"].names = [f"v{i}" for i in range(len(LENGTHS))]
        return info

    def _split_generators(self, dl_manager):
        clips = [CoordinateClip(f"v{i}", i, n) for i, n in enumerate(LENGTHS)]
        return {"train": self._generate_examples(sources=clips, split="train"),
                "test": self._generate_examples(sources=clips[:5], split="test")}

    def clip_encoder(self):
        return encode_coordinate_clip


@pytest.fixture(scope="module")
def coordinates(tmp_path_factory):
    builder = CoordinateVideos(data_dir=str(tmp_path_factory.mktemp("tfds")))
    builder.download_and_prepare()
    return builder


def rgb_coordinates(rgb):
    """(column, row, frame) from network-range RGB."""
    u8 = np.round((rgb + 1) / 2 * 255)
    return u8[..., 0] / 4, u8[..., 1] / 4, u8[..., 2] / 6


def per_frame(values):
    """The value each frame shows (frames are flat in time; the median shrugs off JPEG error)."""
    return np.round(np.median(values.reshape(len(values), -1), axis=1)).astype(int)


def assert_same_columns(rgb_columns, columns):
    """JPEG moves a column's value by under a column (about -0.3 on average); a crop off
    by one moves every column by one."""
    error = np.median(rgb_columns.reshape(-1, rgb_columns.shape[-1]), axis=0) - columns
    assert abs(error.mean()) < 0.5 and np.abs(error).max() < 1, (error, columns)


def window_top(rgb_rows):
    """The first row of a crop (rows must step by one)."""
    medians = np.median(rgb_rows, axis=(0, 2))
    top = int(np.round(np.mean(medians - np.arange(len(medians)))))
    assert_same_columns(rgb_rows.transpose(0, 2, 1), top + np.arange(len(medians)))
    return top


def flow_coordinates(flow, flipped):
    """(column, frame) from network-range flow; a flip negated x."""
    x = np.where(flipped, -flow[..., 0], flow[..., 0])
    u8x, u8y = np.round((x + 1) / 2 * 255), np.round((flow[..., 1] + 1) / 2 * 255)
    return (u8x - 64) / 2, (u8y - 64) / 4


OPTIONS = ip.ClipOptions(num_frames=8, stride=2, crop_size=32, modalities=("rgb", "flow"))
# As the trainer asks: mirrored on the device, so each batch's frames decode into one
# stack (`input_pipeline.train_batch`); OPTIONS batches clips one by one.
ON_DEVICE = dataclasses.replace(OPTIONS, flip_on_device=True)
BOTH_LAYOUTS = pytest.mark.parametrize("options", [OPTIONS, ON_DEVICE],
                                       ids=["clip_by_clip", "assembled"])


def train_batches(builder, count, **kwargs):
    kwargs = {"batch_size": 4, "options": OPTIONS, "seed": 1, "process_index": 0,
              "process_count": 1, **kwargs}
    iterator = ip.DatasetIterator(ip.train_dataset(builder, **kwargs))
    return [next(iterator) for _ in range(count)]


def test_rgb_and_flow_share_frames_crop_and_flip(coordinates):
    flips, lefts, tops = [], set(), set()
    for batch in train_batches(coordinates, 6):
        assert batch["rgb"].shape == (4, 8, 32, 32, 3) and batch["flow"].shape == (4, 8, 32, 32, 2)
        for rgb, flow in zip(batch["rgb"], batch["flow"]):
            column, row, frame = rgb_coordinates(rgb)
            # Columns run right to left after a flip.
            flipped = column[0, 0, 0] > column[0, 0, -1]
            flips.append(flipped)
            flow_column, flow_frame = flow_coordinates(flow, flipped)
            # Flow is lossless: every pixel names the same column and frame.
            assert (flow_column == flow_column[:, :1, :]).all()
            assert (flow_frame == flow_frame[:, :1, :1]).all()
            assert_same_columns(column, flow_column[0, 0])
            np.testing.assert_array_equal(per_frame(frame), flow_frame[:, 0, 0])
            # A crop is a window: columns step by one, rows by one.
            np.testing.assert_array_equal(np.diff(flow_column[0, 0]), -1 if flipped else 1)
            lefts.add(int(flow_column[0, 0].min()))
            tops.add(window_top(row))
    assert 0 < sum(flips) < len(flips), "flips should happen about half of the time"
    assert len(lefts) > 3 and len(tops) > 3, "crops should move"
    assert max(lefts) <= WIDTH - 32 and max(tops) <= HEIGHT - 32


def test_short_videos_loop_and_frames_are_strided(coordinates):
    for batch in train_batches(coordinates, 6):
        for rgb, flow, label in zip(batch["rgb"], batch["flow"], batch["label"]):
            length = LENGTHS[label]
            frames = per_frame(rgb_coordinates(rgb)[2])
            np.testing.assert_array_equal(frames, flow_coordinates(flow, False)[1][:, 0, 0])
            start = frames[0]
            np.testing.assert_array_equal(frames, (start + 2 * np.arange(8)) % length)
            assert start <= max(length - 15, 0), "a clip starts where it fits, or at 0"


def test_sample_clip_indices_loop_and_start_range():
    import tensorflow as tf

    starts = set()
    for i in range(300):
        idx = clip_ops.sample_clip_indices(tf.constant(20), 4, 3, tf.constant([i, 7])).numpy()
        np.testing.assert_array_equal(np.diff(idx), 3)
        starts.add(idx[0])
    assert starts == set(range(0, 20 - 10 + 1))  # the span is 10 frames
    idx = clip_ops.sample_clip_indices(tf.constant(5), 8, 2, tf.constant([3, 4])).numpy()
    np.testing.assert_array_equal(idx, [0, 2, 4, 1, 3, 0, 2, 4])


def test_same_seed_same_stream_other_seed_other_stream(coordinates):
    first = train_batches(coordinates, 3, seed=5)
    again = train_batches(coordinates, 3, seed=5)
    other = train_batches(coordinates, 3, seed=6)
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert any(not np.array_equal(a["rgb"], b["rgb"]) for a, b in zip(first, other))


def side_by_side(batches_of_each_process):
    """The global batches of n processes' streams: their batches concatenated in order."""
    return [{k: np.concatenate([b[k] for b in parts]) for k in parts[0]}
            for parts in zip(*batches_of_each_process)]


def assert_same_batches(expected, got):
    assert len(expected) == len(got)
    for want, have in zip(expected, got):
        for key in want:
            np.testing.assert_array_equal(want[key], have[key], err_msg=key)


@BOTH_LAYOUTS
def test_the_global_batches_do_not_depend_on_the_process_count(coordinates, options):
    assert ip.assembles_batches(options, 8) == options.flip_on_device
    # 8 clips a global batch from a 7-video split: epochs straddle batches.
    one = train_batches(coordinates, 4, batch_size=8, shuffle_buffer=4, options=options)
    for count in (2, 4):
        assert_same_batches(one, side_by_side([train_batches(
            coordinates, 4, batch_size=8 // count, shuffle_buffer=4, process_index=p,
            process_count=count, options=options) for p in range(count)]))
    labels = np.concatenate([b["label"] for b in one])
    assert set(labels[:7].tolist()) == set(range(len(LENGTHS)))  # the first epoch is whole


@BOTH_LAYOUTS
def test_the_last_process_position_continues_on_any_process_count(coordinates, tmp_path,
                                                                   options):
    def pipeline(index, count):
        return ip.DatasetIterator(ip.train_dataset(
            coordinates, batch_size=6 // count, options=options, seed=3, shuffle_buffer=4,
            process_index=index, process_count=count))

    uninterrupted = pipeline(0, 1)
    expected = [next(uninterrupted) for _ in range(5)][3:]
    last = pipeline(1, 2)  # the last of a 2-process run, saved after 3 global batches
    for _ in range(3):
        next(last)
    prefix = last.save(tmp_path / "process_1" / "step_3")
    for count in (1, 2, 3):
        resumed = [pipeline(p, count) for p in range(count)]
        for iterator in resumed:
            iterator.restore(prefix)
        assert_same_batches(expected, side_by_side(
            [[next(iterator) for _ in range(2)] for iterator in resumed]))


@BOTH_LAYOUTS
def test_iterator_state_restores_the_same_sequence(coordinates, tmp_path, options):
    def pipeline():
        return ip.DatasetIterator(ip.train_dataset(
            coordinates, batch_size=3, options=options, seed=2, shuffle_buffer=4,
            process_index=0, process_count=1))

    iterator = pipeline()
    for _ in range(4):
        next(iterator)
    prefix = iterator.save(tmp_path / "input" / "process_0" / "step_4")
    expected = [next(iterator) for _ in range(3)]
    resumed = pipeline()
    resumed.restore(prefix)
    for want, got in zip(expected, [next(resumed) for _ in range(3)]):
        for key in want:
            np.testing.assert_array_equal(want[key], got[key])
    fresh = next(pipeline())
    assert not np.array_equal(fresh["rgb"], expected[0]["rgb"])


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_batches_assembled_at_once_are_the_clips_batched_one_by_one(coordinates, monkeypatch,
                                                                    dtype):
    options = dataclasses.replace(ON_DEVICE, dtype=dtype)
    assembled = train_batches(coordinates, 3, options=options)
    monkeypatch.setattr(ip, "MAX_BATCH_FRAMES", 0)  # every batch clip by clip
    assert not ip.assembles_batches(options, 4)
    one_by_one = train_batches(coordinates, 3, options=options)
    for want, got in zip(one_by_one, assembled):
        assert want.keys() == got.keys() == {"rgb", "flow", "label", "flip"}
        for key in want:
            assert want[key].dtype == got[key].dtype
            np.testing.assert_array_equal(want[key], got[key])


def test_input_positions_of_an_earlier_pipeline_restart_the_stream(coordinates, tmp_path,
                                                                   caplog):
    """Positions saved by the pipeline before batches were assembled at once (no
    "stages" in processes.json) are set aside with a warning, not fed to TF."""
    import json

    from i3d_jax.checkpoints import InputIteratorArgs, InputIteratorHandler

    def pipeline(options):
        return ip.DatasetIterator(ip.train_dataset(
            coordinates, batch_size=4, options=options, seed=2, shuffle_buffer=4,
            process_index=0, process_count=1))

    handler = InputIteratorHandler()
    saved = pipeline(OPTIONS)
    next(saved)
    handler.save(tmp_path, InputIteratorArgs(saved))
    # TF cannot read one layout's positions into the other: the error names the files.
    with pytest.raises(LookupError, match="built differently"):
        pipeline(ON_DEVICE).restore(tmp_path / "process_0" / "iterator")
    record = tmp_path / "processes.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "stages": 1}))
    with caplog.at_level("WARNING"):
        restored = handler.restore(tmp_path, InputIteratorArgs(pipeline(ON_DEVICE)))
    assert "earlier version of the input pipeline" in caplog.text
    np.testing.assert_array_equal(next(restored)["rgb"], next(pipeline(ON_DEVICE))["rgb"])


def test_eval_pads_the_last_batch_with_a_mask(coordinates):
    ids, steps_seen = [], set()
    for process in range(2):
        ds, steps = ip.eval_dataset(coordinates, batch_size=2, options=OPTIONS, split="test",
                                    num_clips=2, whole_video_frames=None,
                                    process_index=process, process_count=2)
        batches = list(ds.as_numpy_iterator())
        assert len(batches) == steps
        steps_seen.add(steps)
        for batch in batches:
            assert batch["rgb"].shape == (2, 2, 8, 32, 32, 3)
            for i, real in enumerate(batch["mask"]):
                if real:
                    ids.append(batch["video_id"][i].decode())
                else:
                    assert batch["label"][i] == -1 and batch["video_id"][i] == b""
                    assert not batch["rgb"][i].any() and not batch["flow"][i].any()
    assert steps_seen == {2}  # 5 videos: 3 + 2, batches of 2
    assert sorted(ids) == [f"v{i}" for i in range(5)]


def test_eval_clips_are_evenly_spaced_and_crops_cover_the_long_side(coordinates):
    ds, _ = ip.eval_dataset(coordinates, batch_size=5, options=OPTIONS, split="test",
                            num_clips=3, num_crops=3, whole_video_frames=None,
                            process_index=0, process_count=1)
    batch = next(ds.as_numpy_iterator())
    assert batch["rgb"].shape == (5, 9, 8, 32, 32, 3)
    for rgb, flow, label in zip(batch["rgb"], batch["flow"], batch["label"]):
        length = LENGTHS[label]
        column, row, frame = rgb_coordinates(rgb)
        flow_column, flow_frame = flow_coordinates(flow, False)
        last_start = max(length - 15, 0)
        starts = np.round(np.linspace(0, last_start, 3)).astype(int)
        for view in range(9):
            clip, crop = divmod(view, 3)
            expected_frames = (starts[clip] + 2 * np.arange(8)) % length
            np.testing.assert_array_equal(flow_frame[view, :, 0, 0], expected_frames)
            np.testing.assert_array_equal(per_frame(frame[view]), expected_frames)
            # Frames are wider than high: crops at the left, centre and right, rows centred.
            left = [0, (WIDTH - 32) // 2, WIDTH - 32][crop]
            np.testing.assert_array_equal(flow_column[view, 0, 0], left + np.arange(32))
            assert_same_columns(column[view], left + np.arange(32))
            assert window_top(row[view]) == (HEIGHT - 32) // 2


def test_eval_whole_video_loops_to_the_cap(coordinates):
    ds, _ = ip.eval_dataset(coordinates, batch_size=5, options=OPTIONS, split="test",
                            whole_video_frames=25, process_index=0, process_count=1)
    batch = next(ds.as_numpy_iterator())
    assert batch["rgb"].shape == (5, 1, 25, 32, 32, 3)
    for rgb, label in zip(batch["rgb"], batch["label"]):
        frames = per_frame(rgb_coordinates(rgb)[2][0])
        np.testing.assert_array_equal(frames, np.arange(25) % LENGTHS[label])


def test_resizing_scales_flow_vectors():
    import tensorflow as tf

    # 2 px of x flow everywhere; doubling the frame size doubles it.
    flow_u8 = np.full((1, 10, 12, 2), np.round((2.0 + 20) * 255 / 40), np.uint8)
    resized, h, w = clip_ops._resized(tf.constant(flow_u8), "flow", 10, 12, 20)
    assert (int(h), int(w)) == (20, 24)
    pixels = resized.numpy() / 255 * 40 - 20
    np.testing.assert_allclose(pixels, 2 * (np.round(22 * 255 / 40) / 255 * 40 - 20), atol=1e-3)


def test_flow_scaling_matches_the_flow_module(coordinates):
    from i3d_jax import flow as flow_module

    ds, _ = ip.eval_dataset(coordinates, batch_size=5, options=OPTIONS, split="test",
                            whole_video_frames=None, process_index=0, process_count=1)
    batch = next(ds.as_numpy_iterator())
    length = LENGTHS[batch["label"][0]]
    _, flow_u8 = coordinate_frames(length)
    top, left = (HEIGHT - 32) // 2, (WIDTH - 32) // 2
    # One clip: the centred one.
    frames = (int(np.round(max(length - 15, 0) / 2)) + 2 * np.arange(8)) % length
    expected = flow_module.flow_to_network(flow_u8[frames, top:top + 32, left:left + 32])
    np.testing.assert_allclose(batch["flow"][0, 0], expected, atol=1e-6)


def test_modalities_the_dataset_lacks_are_named(tmp_path):
    import i3d_jax.datasets as datasets

    module = __import__(datasets.builder_class("synthetic_motion").__module__, fromlist=["x"])
    config = module.SyntheticMotionConfig(name="tiny_rgb", with_flow=False,
                                          num_examples=(("train", 2),), num_frames=4)
    builder = module.Builder(config=config, data_dir=str(tmp_path))
    builder.download_and_prepare()
    with pytest.raises(ValueError, match="no \\['flow'\\]"):
        ip.train_dataset(builder, batch_size=1, options=OPTIONS, process_index=0, process_count=1)


# Two-Stream-like sampling: 2 RGB frames 4 apart from the clip's 3rd frame, 8 flow frames.
TWO_RATES = ip.ClipOptions(
    num_frames=8, crop_size=32, modalities=("rgb", "flow"),
    per_stream=(("rgb", ip.StreamSampling(2, stride=4, offset=2)), ("flow", ip.StreamSampling(8))))


def test_each_stream_samples_its_own_frames_from_the_shared_start(coordinates):
    for batch in train_batches(coordinates, 4, options=TWO_RATES):
        assert batch["rgb"].shape == (4, 2, 32, 32, 3) and batch["flow"].shape == (4, 8, 32, 32, 2)
        for rgb, flow, label in zip(batch["rgb"], batch["flow"], batch["label"]):
            length = LENGTHS[label]
            column, _, frame = rgb_coordinates(rgb)
            flipped = column[0, 0, 0] > column[0, 0, -1]
            flow_column, flow_frame = flow_coordinates(flow, flipped)
            start = flow_frame[0, 0, 0]
            np.testing.assert_array_equal(flow_frame[:, 0, 0], (start + np.arange(8)) % length)
            np.testing.assert_array_equal(per_frame(frame), (start + 2 + 4 * np.arange(2)) % length)
            assert_same_columns(column, flow_column[0, 0])  # one crop (and flip) for both


def test_whole_video_keeps_the_streams_relative_rates(coordinates):
    ds, _ = ip.eval_dataset(coordinates, batch_size=5, options=TWO_RATES, split="test",
                            whole_video_frames=16, process_index=0, process_count=1)
    batch = next(ds.as_numpy_iterator())
    assert batch["rgb"].shape == (5, 1, 4, 32, 32, 3) and batch["flow"].shape == (5, 1, 16, 32,
                                                                                  32, 2)
    for rgb, flow, label in zip(batch["rgb"], batch["flow"], batch["label"]):
        length = LENGTHS[label]
        np.testing.assert_array_equal(flow_coordinates(flow[0], False)[1][:, 0, 0],
                                      np.arange(16) % length)
        np.testing.assert_array_equal(per_frame(rgb_coordinates(rgb[0])[2]),
                                      np.array([2, 6, 10, 14]) % length)


def test_per_stream_sampling_must_name_a_modality():
    with pytest.raises(ValueError, match="per_stream names"):
        ip.ClipOptions(modalities=("rgb",), per_stream=(("flow", ip.StreamSampling(10)),))


def test_uint8_clips_scaled_on_the_device_are_the_float_clips(coordinates):
    """The trainer's uint8 batches, unmirrored with a `flip` flag, scaled and mirrored
    by the steps' `model_inputs`, equal the float32 pipeline's (mirrored on the host),
    and so do uint8 batches mirrored on the host (flow's x as 255 - x); train and eval."""
    import dataclasses

    import jax

    from i3d_jax.streams import model_inputs, network_range

    as_uint8 = dataclasses.replace(OPTIONS, dtype="uint8")
    on_device = dataclasses.replace(as_uint8, flip_on_device=True)
    floats = train_batches(coordinates, 3)
    uint8s = train_batches(coordinates, 3, options=as_uint8)
    unmirrored = train_batches(coordinates, 3, options=on_device)
    scale = jax.jit(network_range)
    steps_inputs = jax.jit(lambda batch: model_inputs(batch, ("rgb", "flow")))
    flipped = 0
    for f, u, d in zip(floats, uint8s, unmirrored):
        inputs = steps_inputs(d)
        for m in ("rgb", "flow"):
            assert u[m].dtype == d[m].dtype == np.uint8 and f[m].dtype == np.float32
            np.testing.assert_allclose(np.asarray(scale(u[m])), f[m], rtol=0, atol=1e-6)
            np.testing.assert_allclose(np.asarray(inputs[m]), f[m], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(d["label"], f["label"])
        flipped += int(d["flip"].sum())
        # The pipeline left the flagged clips as decoded: the float clips mirrored back.
        as_decoded = np.where(d["flip"][:, None, None, None, None], f["rgb"][:, :, :, ::-1],
                              f["rgb"])
        np.testing.assert_allclose(np.asarray(scale(d["rgb"])), as_decoded, rtol=0, atol=1e-6)
    assert 0 < flipped < 12  # flips were among them, and clips left as they were
    eval_options = {"batch_size": 2, "num_clips": 2, "num_crops": 3, "split": "test"}
    evals_f = next(ip.DatasetIterator(ip.eval_dataset(coordinates, options=OPTIONS,
                                                      **eval_options)[0]))
    evals_u = next(ip.DatasetIterator(ip.eval_dataset(coordinates, options=as_uint8,
                                                      **eval_options)[0]))
    for m in ("rgb", "flow"):
        np.testing.assert_allclose(np.asarray(scale(evals_u[m])), evals_f[m], atol=1e-6)
