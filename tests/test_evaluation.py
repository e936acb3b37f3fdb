"""Fusion of separately trained runs, per-class accuracy and the confusion matrix."""
import numpy as np
import pytest

from i3d_jax import evaluation
from i3d_jax.train import EvalPredictions


def predictions(logits, labels, keys):
    return EvalPredictions(logits={"logits": np.asarray(logits, np.float32)},
                           labels=np.asarray(labels), video_keys=np.asarray(keys, np.int32))


def test_fusion_averages_logits_video_by_video_whatever_the_order():
    rng = np.random.default_rng(0)
    rgb = rng.normal(size=(5, 3))
    flow = rng.normal(size=(5, 3))
    labels = np.array([0, 1, 2, 1, 0])
    order = np.array([3, 0, 4, 1, 2])  # the flow run met the videos in another order
    fused = evaluation.fuse([predictions(rgb, labels, [10, 11, 12, 13, 14]),
                             predictions(flow[order], labels[order],
                                         np.array([10, 11, 12, 13, 14])[order])],
                            ["rgb", "flow"])
    np.testing.assert_allclose(fused.logits["logits"], (rgb + flow) / 2, rtol=1e-6)
    np.testing.assert_array_equal(fused.labels, labels)


def test_fusion_refuses_other_videos_labels_or_classes():
    a = predictions(np.zeros((3, 4)), [0, 1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="1 of a's are not in b, 1 of b's are not in a"):
        evaluation.fuse([a, predictions(np.zeros((3, 4)), [0, 1, 2], [1, 2, 4])], ["a", "b"])
    with pytest.raises(ValueError, match="other labels"):
        evaluation.fuse([a, predictions(np.zeros((3, 4)), [0, 1, 3], [1, 2, 3])], ["a", "b"])
    with pytest.raises(ValueError, match=r"b \(5 classes\) with a \(4 classes\)"):
        evaluation.fuse([a, predictions(np.zeros((3, 5)), [0, 1, 2], [1, 2, 3])], ["a", "b"])


def test_confusion_and_per_class_accuracy():
    # True classes 0, 0, 1, 2; predicted 0, 1, 1, 0.
    logits = np.eye(3)[[0, 1, 1, 0]]
    confusion = evaluation.confusion_matrix(logits, np.array([0, 0, 1, 2]), 3)
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 1, 0], [1, 0, 0]])
    assert evaluation.per_class_accuracy(confusion, ["a", "b", "c"]) == {"a": 0.5, "b": 1.0,
                                                                         "c": 0.0}
    metrics, _ = evaluation.report(predictions(logits, [0, 0, 1, 2], [1, 2, 3, 4]),
                                   ["a", "b", "c"])
    assert metrics["top1"] == 0.5 and metrics["mean_class_accuracy"] == pytest.approx(0.5)


def test_the_confusion_picture_is_written_whole(tmp_path):
    from PIL import Image

    path = evaluation.plot_confusion(np.array([[3, 1], [0, 4]]), ["up", "down"],
                                     tmp_path / "eval" / "confusion.png", "test")
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10  # something is drawn
    assert [p.name for p in path.parent.iterdir()] == ["confusion.png"]  # no temporary left
