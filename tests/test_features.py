"""`i3d-jax features --out-dir`: windows, crops and one file per video
(i3d_jax/features.py), in process with a tiny I3D on 8 fake devices."""
import os

import jax
import numpy as np
import pytest

from i3d_jax.checkpoints import ModelMetadata, save_pretrained
from i3d_jax.features import crop_views, window_starts, window_timestamps
from i3d_jax.models import InceptionI3d
from fake_videos import write_video
from test_cli import run_cli
from variables_for_tests import random_variables


def test_windows_start_every_step_while_they_fit_whole():
    assert window_starts(21, 8, 6) == [0, 6, 12]  # 18 + 8 > 21: no fourth
    assert window_starts(20, 8, 6) == [0, 6, 12]
    assert window_starts(9, 4, 2) == [0, 2, 4]
    assert window_starts(16, 8, 8) == [0, 8]
    assert window_starts(5, 8, 8) == [0]  # shorter than a stack: one window of all
    np.testing.assert_allclose(window_timestamps([0, 6], 8, 25.0), [[0, 0.28], [0.24, 0.52]])
    with pytest.raises(ValueError, match="positive"):
        window_starts(10, 0, 1)


def test_ten_crops_are_the_corners_and_centre_each_flipped():
    frames = np.arange(2 * 6 * 8 * 1, dtype=np.float32).reshape(2, 6, 8, 1)
    views = crop_views(frames, 4, 10)
    assert views.shape == (10, 2, 4, 4, 1)
    np.testing.assert_array_equal(views[0], frames[:, :4, :4])  # top left
    np.testing.assert_array_equal(views[3], frames[:, 2:, 4:])  # bottom right
    np.testing.assert_array_equal(views[4], frames[:, 1:5, 2:6])  # centre
    np.testing.assert_array_equal(views[5:], views[:5, :, :, ::-1])  # flipped
    three = crop_views(frames, 4, 3)  # along the long side (width)
    np.testing.assert_array_equal(three[0], frames[:, 1:5, :4])
    np.testing.assert_array_equal(three[2], frames[:, 1:5, 4:])


SIZE = 32


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    model = InceptionI3d(num_classes=5, width_multiplier=0.125)
    variables = random_variables(jax.eval_shape(  # no compile of the init
        lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 8, SIZE, SIZE, 3), np.float32),
                           train=False)))
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_pretrained(path, dict(variables),
                    ModelMetadata(num_classes=5, width_multiplier=0.125))
    return path, model, variables


def test_features_for_a_dataset(tiny_checkpoint, tmp_path, capsys):
    """Each window's features are the model's on exactly that window's frames; the
    windows follow the rules; a rerun skips what is done; a bad file is listed."""
    path, model, variables = tiny_checkpoint
    data = tmp_path / "videos"
    (data / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    long = rng.uniform(-1, 1, (21, SIZE, SIZE + 8, 3)).astype(np.float32)  # odd count, wide
    short = rng.uniform(-1, 1, (5, SIZE, SIZE, 3)).astype(np.float32)
    np.save(data / "sub" / "long.npy", long)
    np.save(data / "short.npy", short)
    write_video(data / "sub" / "thirty.mp4", num_frames=30, fps=30)  # 1 s: 25 frames at 25 fps
    (data / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "features"
    args = ["features", str(data), "--out-dir", str(out), "--checkpoint", str(path),
            "--stack", "8", "--step", "6", "--crops", "3", "--crop-size", str(SIZE)]
    code, _, err = run_cli(args, capsys)
    assert code == 1 and "3 done, 0 skipped (already done), 1 failed" in err
    assert "broken.mp4" in (out / "failures.txt").read_text()

    @jax.jit
    def avg_pool(window):
        return model.apply(variables, window[None], train=False, return_endpoints=True)[1][
            "AvgPool"][0]

    def expected(window):  # AvgPool [T', 1024] averaged over time, as one clip alone
        return np.asarray(avg_pool(window)).mean(axis=0)

    with np.load(out / "sub" / "long.npz") as saved:
        assert saved["rgb"].shape == (3, 3, 128)  # windows at 0, 6, 12; 3 crops
        np.testing.assert_allclose(saved["timestamps"], [[0, 0.28], [0.24, 0.52], [0.48, 0.76]])
        assert (int(saved["num_frames"]), int(saved["stack"]), int(saved["step"])) == (21, 8, 6)
        assert str(saved["endpoint"]) == "AvgPool" and len(str(saved["rgb_params_sha256"])) == 64
        assert str(saved["rgb_weights"]) == str(path) and "flow" not in saved
        for w, start in enumerate((0, 6, 12)):
            views = crop_views(long[start:start + 8], SIZE, 3)
            for c in range(3):
                np.testing.assert_allclose(saved["rgb"][w, c], expected(views[c]), atol=1e-5)
    with np.load(out / "short.npz") as saved:
        assert saved["rgb"].shape == (1, 3, 128)
        np.testing.assert_allclose(saved["timestamps"], [[0, 0.16]])
        np.testing.assert_allclose(saved["rgb"][0, 1], expected(short), atol=1e-5)

    with np.load(out / "sub" / "thirty.npz") as saved:  # resampled 30 -> 25 fps
        assert int(saved["num_frames"]) == 25 and float(saved["fps"]) == 25
        np.testing.assert_allclose(saved["timestamps"], [[0, 0.28], [0.24, 0.52], [0.48, 0.76]])
        assert saved["rgb"].shape == (3, 3, 128) and np.isfinite(saved["rgb"]).all()

    written = os.stat(out / "short.npz").st_mtime_ns
    code, _, err = run_cli(args, capsys)  # a rerun (a killed run resumed) skips what is done
    assert code == 1 and "0 done, 3 skipped" in err
    assert os.stat(out / "short.npz").st_mtime_ns == written
    (data / "broken.mp4").unlink()
    code, _, err = run_cli([*args, "--overwrite"], capsys)
    assert code == 0 and "3 done" in err and not (out / "failures.txt").exists()
    assert not list(out.rglob(".*"))  # no temporary file left


def test_several_hosts_split_the_videos_between_them(tiny_checkpoint, tmp_path):
    """Process p of n takes every n-th video from the p-th; each lists its own failures."""
    from i3d_jax.features import WindowFeatures, extract_dataset
    from i3d_jax.inference import LoadedModel

    path, _, _ = tiny_checkpoint
    data = tmp_path / "videos"
    data.mkdir()
    for name in ("a", "b", "c"):
        np.save(data / f"{name}.npy", np.zeros((8, SIZE, SIZE, 3), np.float32))
    (data / "d.mp4").write_bytes(b"not a video")
    features = {"rgb": WindowFeatures(LoadedModel.from_options(checkpoint=str(path)), "AvgPool")}
    out = tmp_path / "features"
    summaries = [extract_dataset([data], out, features, stack=8, step=8, crops=1, fps=25.0,
                                 crop_size=SIZE, process_index=p, process_count=2)
                 for p in range(2)]
    assert [(s.done, len(s.failed)) for s in summaries] == [(2, 0), (1, 1)]  # a, c | b, d
    assert sorted(p.name for p in out.iterdir()) == [
        "a.npz", "b.npz", "c.npz", "failures.process_1.txt"]
    assert "d.mp4" in (out / "failures.process_1.txt").read_text()


def test_windows_from_chunks_are_the_windows_of_the_whole():
    """Any chunking gives the windows `window_starts` places, with their frames."""
    from i3d_jax.features import stream_windows

    for total, stack, step, chunk in [(21, 8, 6, 4), (21, 8, 6, 1), (25, 8, 11, 3),
                                      (16, 8, 8, 5), (5, 8, 8, 2), (8, 8, 3, 7)]:
        frames = np.arange(total, dtype=np.float32)[:, None, None, None]
        chunks = [frames[i:i + chunk] for i in range(0, total, chunk)]
        counted = {}
        got = list(stream_windows(chunks, stack, step, counted))
        assert [s for s, _ in got] == window_starts(total, stack, step), (total, stack, step)
        for start, window in got:
            np.testing.assert_array_equal(window, frames[start:start + stack])
        assert counted["frames"] == total


def test_a_video_read_in_segments_is_the_video_read_whole(tmp_path):
    """Consecutive segments of a 30 fps video resampled to 25 fps are its frames."""
    from i3d_jax.features import network_chunks

    video = tmp_path / "thirty.mp4"
    write_video(video, num_frames=45, fps=30)  # 1.5 s: 37 frames at 25 fps
    whole = np.concatenate(list(network_chunks(video, 25.0, ("rgb",), 3, chunk_frames=1000)))
    assert len(whole) == 37
    for chunk_frames in (7, 37):  # 37: a last segment starting exactly at the end
        chunks = list(network_chunks(video, 25.0, ("rgb",), 3, chunk_frames=chunk_frames))
        # Bounded memory: no segment holds more than its share of the video.
        assert max(len(chunk) for chunk in chunks) <= chunk_frames
        np.testing.assert_array_equal(np.concatenate(chunks), whole)


def test_rgb_and_flow_in_one_run_are_each_stream_on_the_window_alone(tiny_checkpoint, tmp_path,
                                                                     capsys):
    """With flow, a window at s covers frames s..s+stack-1 in RGB and the TV-L1 flow
    between frames s..s+stack: both equal the model on that window alone, the flow
    computed by `tvl1_flow` on those frames (DeepMind's recipe, the cut-down solver
    of test_flow.py), and the windows are placed over the F - 1 frames that have flow."""
    from i3d_jax.features import FlowOnDevices, WindowFeatures, decoded_chunks, extract_dataset
    from i3d_jax.flow import TVL1Params, flow_to_network, tvl1_flow
    from i3d_jax.inference import LoadedModel
    from i3d_jax.video import to_network_range, write_mp4
    from test_flow import SMALL, moving_texture

    rgb_path, rgb_model, rgb_variables = tiny_checkpoint
    flow_model = InceptionI3d(num_classes=5, width_multiplier=0.125)
    flow_variables = random_variables(jax.eval_shape(
        lambda: flow_model.init(jax.random.PRNGKey(1), np.zeros((1, 8, SIZE, SIZE, 2)),
                                train=False)), seed=1)
    flow_path = tmp_path / "flow_ckpt"
    save_pretrained(flow_path, dict(flow_variables), ModelMetadata(
        num_classes=5, width_multiplier=0.125, stream="flow", in_channels=2))
    video = tmp_path / "videos" / "moving.mp4"
    video.parent.mkdir()
    write_mp4(video, moving_texture(12), 25)  # 48x40, 1.5 px a frame

    # The CLI's stream choices, checked before any video is read.
    base = ["features", str(video), "--out-dir", str(tmp_path / "cli")]
    for extra, message in [
        (["--checkpoint", str(rgb_path), "--streams", "rgb,flow"], "--flow-checkpoint DIR"),
        (["--checkpoint", str(rgb_path), "--flow-checkpoint", str(rgb_path)], "not flow"),
        (["--checkpoint", str(flow_path), "--streams", "rgb"], "needs RGB weights"),
        (["--checkpoint", str(rgb_path), "--streams", "depth"], "choose rgb, flow"),
    ]:
        code, _, err = run_cli(base + extra, capsys)
        assert code != 0 and message in err, (extra, err)

    features = {stream: WindowFeatures(LoadedModel.from_options(checkpoint=str(path)), "AvgPool")
                for stream, path in (("rgb", rgb_path), ("flow", flow_path))}
    out = tmp_path / "features"
    summary = extract_dataset(
        [video.parent], out, features, stack=4, step=3, crops=1, fps=25.0, crop_size=SIZE,
        short_side=SIZE + 8, chunk_frames=5,  # chunks cut windows and frame pairs
        flow=FlowOnDevices(pairs_per_device=1, params=TVL1Params(**SMALL)))
    assert summary.done == 1 and not summary.failed

    frames = np.concatenate(list(decoded_chunks(video, 25.0, short_side=SIZE + 8)))
    assert frames.shape == (12, SIZE + 8, 48, 3)

    def apply(model):
        return jax.jit(lambda variables, clip: model.apply(
            variables, clip[None], train=False, return_endpoints=True)[1]["AvgPool"][0].mean(0))

    rgb_fn, flow_fn = apply(rgb_model), apply(flow_model)
    with np.load(out / "moving.npz") as saved:
        assert saved["rgb"].shape == saved["flow"].shape == (3, 1, 128)  # 11 positions: 0, 3, 6
        assert int(saved["num_frames"]) == 11
        np.testing.assert_allclose(saved["timestamps"], [[0, 0.12], [0.12, 0.24], [0.24, 0.36]])
        assert str(saved["flow_weights"]) == str(flow_path)
        for w, start in enumerate((0, 3, 6)):
            window = frames[start:start + 5]
            rgb = crop_views(to_network_range(window[:4]), SIZE, 1)[0]
            flow = tvl1_flow(window, batch_size=1, **SMALL)
            assert np.abs(flow[..., 0]).mean() > 0.5  # it moves
            flow = crop_views(flow_to_network(flow), SIZE, 1)[0]
            np.testing.assert_allclose(saved["rgb"][w, 0], rgb_fn(rgb_variables, rgb), atol=1e-5)
            np.testing.assert_allclose(saved["flow"][w, 0], flow_fn(flow_variables, flow),
                                       atol=1e-5)
