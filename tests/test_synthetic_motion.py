"""The generated dataset: reproducible, classes set by motion only, exact flow."""
import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy import ndimage

import i3d_jax.datasets as datasets
from i3d_jax.datasets.synthetic_motion import CLASS_NAMES, MOTIONS, clip_rng, render_clip

TINY = dict(num_frames=6, height=32, width=40)
NOISE_LEVEL = 2.6  # mean |difference| of two frames' pixel noise (std 2 each) is about 2.3


def render(label, index, seed=0, num_frames=8, size=64):
    return render_clip(label, clip_rng(seed, 0, index), num_frames=num_frames, height=size,
                       width=size)


def test_clips_are_a_function_of_seed_split_and_index():
    frames, flow = render(3, 5)
    again, again_flow = render(3, 5)
    np.testing.assert_array_equal(frames, again)
    np.testing.assert_array_equal(flow, again_flow)
    assert not np.array_equal(frames, render(3, 5, seed=1)[0])
    assert not np.array_equal(frames, render(3, 6)[0])
    assert frames.shape == (8, 64, 64, 3) and frames.dtype == np.uint8
    assert flow.shape == (7, 64, 64, 2) and flow.dtype == np.float32


def _frame_features(frame):
    grey = frame.mean(-1)
    edges = [np.abs(np.diff(grey, axis=0)).mean(), np.abs(np.diff(grey, axis=1)).mean()]
    return np.concatenate([frame.mean((0, 1)), frame.std((0, 1)), edges])


def _motion_features(clip):
    """Global shift between frames 0 and 2 (phase correlation) and the mean temporal change."""
    grey = clip.mean(-1)
    a, b = grey[0] - grey[0].mean(), grey[2] - grey[2].mean()
    cross = np.fft.fft2(a).conj() * np.fft.fft2(b)
    peak = np.real(np.fft.ifft2(cross / (np.abs(cross) + 1e-6)))
    dy, dx = np.unravel_index(np.argmax(peak), peak.shape)
    size = grey.shape[1]
    dy, dx = (dy + size // 2) % size - size // 2, (dx + size // 2) % size - size // 2
    return np.array([dy, abs(dx), np.abs(np.diff(grey, axis=0)).mean()])


def _nearest_centroid_accuracy(features, labels):
    """Fit class means on even samples, classify odd ones."""
    train = np.arange(len(labels)) % 2 == 0
    mean, std = features[train].mean(0), features[train].std(0) + 1e-6
    z = (features - mean) / std
    centroids = np.stack([z[train & (labels == c)].mean(0) for c in range(len(MOTIONS))])
    predicted = np.argmin(((z[~train][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    return (predicted == labels[~train]).mean()


def test_one_frame_cannot_tell_the_class_but_motion_can():
    clips, labels = [], []
    for label in range(len(MOTIONS)):
        for i in range(24):
            clips.append(render(label, 1000 * label + i, seed=1)[0].astype(np.float32))
            labels.append(label)
    clips, labels = np.stack(clips), np.array(labels)
    chance = 1 / len(MOTIONS)
    for t in (0, clips.shape[1] - 1):
        frame_accuracy = _nearest_centroid_accuracy(
            np.stack([_frame_features(c[t]) for c in clips]), labels)
        assert frame_accuracy < chance + 0.12, f"frame {t} tells the class ({frame_accuracy:.2f})"
    motion_accuracy = _nearest_centroid_accuracy(
        np.stack([_motion_features(c) for c in clips]), labels)
    assert motion_accuracy > 0.8, motion_accuracy
    # The average frame of every class is the same flat grey, up to sampling noise.
    class_means = np.stack([clips[labels == c].mean(axis=(0, 1, 2, 3))
                            for c in range(len(MOTIONS))])
    assert np.abs(class_means - class_means.mean(0)).max() < 3


@pytest.mark.parametrize("label", range(len(MOTIONS)), ids=CLASS_NAMES)
def test_true_flow_carries_each_frame_onto_the_next(label):
    frames, flow = render(label, 7, num_frames=3)
    frames = frames.astype(np.float32)
    y, x = np.mgrid[0:64, 0:64].astype(np.float32)

    moving = np.hypot(flow[0, ..., 0], flow[0, ..., 1]) > 0.1  # all, or the spinning disk

    def residual(u):
        # Frame 1 sampled where flow sends frame 0's pixels; the scene wraps around the edges.
        where = [y + u[..., 1], x + u[..., 0]]
        warped = np.stack([ndimage.map_coordinates(frames[1][..., c], where, order=1,
                                                   mode="grid-wrap") for c in range(3)], -1)
        return np.abs(warped - frames[0])[moving].mean()

    with_flow = residual(flow[0])
    assert with_flow < NOISE_LEVEL
    assert with_flow < 0.8 * residual(np.zeros_like(flow[0]))
    assert with_flow < 0.8 * residual(-flow[0])
    speed = np.hypot(flow[0, ..., 0], flow[0, ..., 1]).max()
    assert speed == pytest.approx(MOTIONS[label].speed, rel=0.05)


def _tiny_config(**fields):
    module = __import__(datasets.builder_class("synthetic_motion").__module__, fromlist=["x"])
    return module.Builder, module.SyntheticMotionConfig(
        name=fields.pop("name"), num_frames=6, height=32, width=40,
        num_examples=(("train", 16), ("test", 8)), **fields)


def test_built_dataset_holds_the_rendered_clips(tmp_path):
    builder_class, config = _tiny_config(name="test_rgb", with_flow=False, seed=4)
    builder = builder_class(config=config, data_dir=str(tmp_path))
    builder.download_and_prepare()
    assert builder.info.features["label"].names == list(CLASS_NAMES)
    train = list(tfds.as_numpy(builder.as_dataset(split="train")))
    assert len(train) == 16 and "flow" not in train[0]
    assert sorted(e["label"] for e in train) == sorted(list(range(8)) * 2)
    for example in train:
        index = int(example["video_id"].decode().split("_")[1])
        frames, _ = render_clip(example["label"], clip_rng(4, 0, index), **TINY)
        other, _ = render_clip(example["label"], clip_rng(4, 0, index + 8), **TINY)
        assert example["video"].shape == (6, 32, 40, 3)
        error = np.abs(example["video"].astype(int) - frames).mean()  # JPEG's
        assert error < 8 and error < 0.3 * np.abs(example["video"].astype(int) - other).mean()
        assert example["label_name"].decode() == CLASS_NAMES[example["label"]]
        assert example["fps"] == 25.0


def test_built_dataset_stores_the_quantised_true_flow(tmp_path):
    from i3d_jax import flow as flow_module

    builder_class, config = _tiny_config(name="test_flow", with_flow=True, seed=4)
    builder = builder_class(config=config, data_dir=str(tmp_path))
    builder.download_and_prepare()
    for example in tfds.as_numpy(builder.as_dataset(split="test")):
        index = int(example["video_id"].decode().split("_")[1])
        _, flow = render_clip(example["label"], clip_rng(4, 2, index), **TINY)
        expected = flow_module.quantize_flow(flow)
        assert example["flow"].shape == (6, 32, 40, 2)
        np.testing.assert_array_equal(example["flow"][:5], expected)
        np.testing.assert_array_equal(example["flow"][5], expected[4])
