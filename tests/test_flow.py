"""TV-L1 flow without OpenCV: known motion, batching, storage conventions, colours, CLI.

The comparisons with OpenCV's DualTVL1 and DeepMind's flow are in
test_flow_opencv.py. Frames here are small and the solver is cut down
(`SMALL`) so compiling and running stay quick; the full default solver runs
there.
"""
import numpy as np
import pytest
from scipy import ndimage

from i3d_jax import flow as F

# Two levels, few iterations: enough to recover a pixel-sized translation on a
# smooth texture. Every test below uses these parameters and 40x48 frames, so
# the jitted solver compiles once per batch size.
SMALL = dict(scales=2, warps=2, inner_iterations=10, outer_iterations=3)
HEIGHT, WIDTH = 40, 48
SHIFT = (1.5, -0.75)  # (x, y) pixels a frame


def moving_texture(frames: int, shift=SHIFT, seed: int = 0) -> np.ndarray:
    """uint8 RGB frames [T, H, W, 3] of a smooth texture translated by `shift` each frame."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.standard_normal((HEIGHT, WIDTH, 3)), (2.0, 2.0, 0))
    texture = (texture - texture.min()) / (texture.max() - texture.min()) * 255.0
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    video = []
    for t in range(frames):
        # Frame t shows the texture moved by t * shift: I_t(p + shift) = I_{t-1}(p).
        coords = [yy - t * shift[1], xx - t * shift[0]]
        video.append(np.stack([ndimage.map_coordinates(texture[..., c], coords, order=3, mode="reflect")
                               for c in range(3)], axis=-1))
    return np.clip(np.round(video), 0, 255).astype(np.uint8)


def interior(flow, margin=6):
    return flow[..., margin:-margin, margin:-margin, :]


@pytest.fixture(scope="module")
def video():
    return moving_texture(5)


def test_recovers_translation(video):
    flow = F.tvl1_flow(video[:2], **SMALL)
    assert flow.shape == (1, HEIGHT, WIDTH, 2) and flow.dtype == np.float32
    error = np.hypot(*np.moveaxis(interior(flow)[0] - np.asarray(SHIFT, np.float32), -1, 0))
    assert error.mean() < 0.1, f"mean end-point error {error.mean():.3f} px on a {SHIFT} px translation"


def test_batched_pairs_equal_single_pairs(video):
    """vmap turns each pair's stopping test into a mask: a batch must not change any pair."""
    import jax.numpy as jnp

    gray = F.to_gray(video)
    params = F.TVL1Params(**SMALL)
    # An identical pair converges at once while the moving pairs keep iterating.
    prev = np.stack([gray[0], gray[2], gray[1]])
    nxt = np.stack([gray[1], gray[2], gray[2]])
    batched = np.asarray(F.tvl1_pairs(jnp.asarray(prev), jnp.asarray(nxt), params))
    for i in range(3):
        single = np.asarray(F.tvl1_pairs(jnp.asarray(prev[i : i + 1]), jnp.asarray(nxt[i : i + 1]), params))[0]
        np.testing.assert_allclose(batched[i], single, atol=1e-5, err_msg=f"pair {i}")
    np.testing.assert_array_equal(batched[1], 0.0)
    assert np.abs(batched[0]).mean() > 0.5


def test_flow_batches_and_padding_do_not_change_the_result(video):
    # 4 pairs in batches of 3: the second batch is padded with repeats of the last pair.
    in_threes = F.tvl1_flow(video, batch_size=3, **SMALL)
    one_by_one = F.tvl1_flow(video, batch_size=1, **SMALL)
    assert in_threes.shape == (4, HEIGHT, WIDTH, 2)
    np.testing.assert_allclose(in_threes, one_by_one, atol=1e-5)


def test_gray_and_float_inputs_agree(video):
    from_rgb = F.tvl1_flow(video[:2], **SMALL)
    from_gray = F.tvl1_flow(F.to_gray(video[:2]).astype(np.uint8), **SMALL)
    np.testing.assert_array_equal(from_rgb, from_gray)
    # Float frames are in [0, 1], as OpenCV takes them.
    from_float = F.tvl1_flow(video[:2].astype(np.float32) / 255.0, **SMALL)
    np.testing.assert_allclose(from_float, from_rgb, atol=0.05)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"\(3, 8, 8, 2\)"):
        F.to_gray(np.zeros((3, 8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match="at least 2 frames"):
        F.tvl1_flow(np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="median_filtering"):
        F.TVL1Params(median_filtering=4)
    with pytest.raises(ValueError, match="scale_step"):
        F.TVL1Params(scale_step=1.2)


def test_pyramid_sizes_follow_opencv_rounding():
    # 256x340 at 0.8: 204.8 -> 205, 272; then 164x218 (217.6), 131x174 (174.4), 105x139 (139.2).
    assert F.pyramid_shapes(256, 340, F.TVL1Params()) == [
        (256, 340), (205, 272), (164, 218), (131, 174), (105, 139)]
    # Levels stop before a side drops under 16 pixels.
    assert F.pyramid_shapes(24, 100, F.TVL1Params()) == [(24, 100), (19, 80)]


def test_median_network_selects_the_median():
    rng = np.random.default_rng(1)
    for size in (3, 5, 7):
        image = rng.standard_normal((12, 13)).astype(np.float32)
        ours = np.asarray(F._median_filter(image, size))
        padded = np.pad(image, size // 2, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size))
        np.testing.assert_array_equal(ours, np.median(windows, axis=(-2, -1)))


def test_quantize_round_trip_and_truncation():
    flow = np.linspace(-25.0, 25.0, 1001, dtype=np.float32).reshape(-1, 1, 1, 1)
    flow = np.concatenate([flow, -flow], axis=-1)
    quantized = F.quantize_flow(flow)
    assert quantized.dtype == np.uint8
    restored = F.dequantize_flow(quantized)
    truncated = np.clip(flow, -20.0, 20.0)
    # One step is 40/255 pixels; rounding costs at most half of it.
    assert np.abs(restored - truncated).max() <= 20.0 / 255.0 + 1e-5
    assert quantized[flow <= -20.0].max() == 0 and quantized[flow >= 20.0].min() == 255
    assert F.quantize_flow(np.zeros(1)).item() == 128  # 127.5 rounds to even


def test_flow_to_network_range():
    flow = np.array([-40.0, -20.0, -5.0, 0.0, 10.0, 20.0, 33.0], np.float32)
    np.testing.assert_allclose(F.flow_to_network(flow), [-1.0, -1.0, -0.25, 0.0, 0.5, 1.0, 1.0])
    # Stored uint8 flow maps to the same range as the float flow it came from.
    quantized = F.quantize_flow(flow)
    np.testing.assert_allclose(F.flow_to_network(quantized), F.dequantize_flow(quantized) / 20.0, atol=1e-6)


def test_colour_wheel_directions_and_saturation():
    directions = np.array([[[[4.0, 0.0], [-4.0, 0.0], [0.0, 0.0], [2.0, 0.0], [8.0, 0.0]]]])
    colours = F.flow_to_colour(directions, max_magnitude=4.0)[0, 0]
    np.testing.assert_array_equal(colours[0], [255, 0, 0])  # +x: red, fully saturated
    assert colours[1][0] == 0 and colours[1][2] == 255  # -x: the opposite hue, blue-cyan
    np.testing.assert_array_equal(colours[2], [255, 255, 255])  # no motion: white
    np.testing.assert_array_equal(colours[3], [255, 128, 128])  # half the maximum: half saturated
    np.testing.assert_array_equal(colours[4], [191, 0, 0])  # beyond the maximum: darkened


def test_cli_writes_flow_and_visualisations(tmp_path, video, capsys):
    from i3d_jax.cli import main
    from i3d_jax.video import decode_video

    frames = tmp_path / "frames.npy"
    np.save(frames, video[:4])
    out, gif, mp4 = tmp_path / "flow.npy", tmp_path / "flow.gif", tmp_path / "flow.mp4"
    small = ["--scales", "2", "--warps", "2", "--inner-iterations", "10", "--outer-iterations", "3"]
    for viz in (["--viz", str(gif)], ["--viz", str(mp4), "--viz-max", "2"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["flow", str(frames), "--out", str(out), *viz, *small])
        assert exit_info.value.code == 0
    flow = np.load(out)
    assert flow.shape == (3, HEIGHT, WIDTH, 2) and flow.dtype == np.float32
    error = np.hypot(*np.moveaxis(interior(flow) - np.asarray(SHIFT, np.float32), -1, 0))
    assert error.mean() < 0.1
    np.testing.assert_allclose(flow, F.tvl1_flow(video[:4], **SMALL), atol=1e-6)
    from PIL import Image

    with Image.open(gif) as image:
        assert image.n_frames == 3 and image.size == (WIDTH, HEIGHT)
    rendered, _ = decode_video(mp4, fps=None)
    assert rendered.shape == (3, HEIGHT, WIDTH, 3)
    # (1.5, -0.75) px against a 2 px maximum: a strong magenta-red (R and B high, G low).
    centre = np.median(rendered[:, 10:-10, 10:-10].reshape(-1, 3).astype(int), axis=0)
    assert centre[0] > 200 and centre[1] < 100 and centre[2] > 150, centre
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.gif", "flow.mp4", "flow.npy", "frames.npy"]


def test_cli_rejects_bad_inputs(tmp_path, capsys):
    from i3d_jax.cli import main

    clip = tmp_path / "clip.npy"
    np.save(clip, np.zeros((4, 16, 16, 3), np.float32))
    with pytest.raises(SystemExit) as exit_info:
        main(["flow", str(clip), "--out", str(tmp_path / "flow.npy")])
    assert exit_info.value.code == 2
    assert "clip.npy" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["flow", str(clip), "--out", str(tmp_path / "flow.txt")])
    assert exit_info.value.code == 2
    assert "flow.txt" in capsys.readouterr().err
    assert not (tmp_path / "flow.npy").exists()
