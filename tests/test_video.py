"""Video decoding (PyAV) and DeepMind's preprocessing."""
import av
import numpy as np
import pytest
from PIL import Image, ImageFilter

from i3d_jax.video import (VideoDecodeError, centre_crop, decode_video, load_clip,
                           resize_short_side)


def write_numbered_video(path, count, fps, width=64, height=48, codec="libx264"):
    """Frame i is a flat grey of level 4 * i, so a decoded frame names its index."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "0"}  # near-lossless so levels survive
        for i in range(count):
            frame = np.full((height, width, 3), 4 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def frame_indices(video):
    return np.round(video.reshape(len(video), -1).mean(axis=1) / 4).astype(int).tolist()


def test_25fps_video_keeps_every_frame(tmp_path):
    write_numbered_video(tmp_path / "v.mp4", 20, 25)
    video, fps = decode_video(tmp_path / "v.mp4")
    assert fps == 25 and video.shape == (20, 48, 64, 3)
    assert frame_indices(video) == list(range(20))


def test_50fps_is_resampled_to_25_by_dropping_every_other_frame(tmp_path):
    write_numbered_video(tmp_path / "v.mp4", 20, 50)
    video, fps = decode_video(tmp_path / "v.mp4")
    assert fps == 50
    assert frame_indices(video) == list(range(0, 20, 2))


def test_10fps_is_resampled_to_25_by_repeating_frames(tmp_path):
    write_numbered_video(tmp_path / "v.mp4", 4, 10)
    video, _ = decode_video(tmp_path / "v.mp4")
    # 0.4 s at 25 fps: times 0, .04, ..., .36 show source frames at 0, .1, .2, .3.
    assert frame_indices(video) == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]


def test_max_frames_caps_after_resampling(tmp_path):
    write_numbered_video(tmp_path / "v.mp4", 40, 50)
    video, _ = decode_video(tmp_path / "v.mp4", max_frames=7)
    assert frame_indices(video) == list(range(0, 14, 2))


def test_gif_decodes_like_pil(reference_dir, cricket_rgb_u8):
    video, fps = decode_video(reference_dir / "v_CricketShot_g04_c01_rgb.gif")
    assert video.shape == cricket_rgb_u8.shape == (79, 224, 224, 3)
    assert np.abs(video.astype(int) - cricket_rgb_u8).max() <= 1


def test_preprocessing_resizes_short_side_and_centre_crops(tmp_path):
    # A 320x240 video with a bright column at x=160: after resize to 341x256
    # and a centre crop of 224, it sits in the middle of the crop.
    path = tmp_path / "wide.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"crf": "0"}
        frame = np.zeros((240, 320, 3), np.uint8)
        frame[:, 156:164] = 255
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    clip = load_clip(path)
    assert clip.shape == (3, 224, 224, 3)
    assert clip.min() >= -1 and clip.max() <= 1
    column = clip[0, 112, :, 0]
    assert abs(int(np.argmax(column)) - 112) <= 4
    assert column[0] < -0.9 and column[-1] < -0.9
    resized = resize_short_side(np.zeros((2, 240, 320, 3), np.uint8))
    assert resized.shape == (2, 256, 341, 3)
    assert centre_crop(resized).shape == (2, 224, 224, 3)


def test_npy_clip_is_used_as_is(tmp_path):
    clip = np.random.default_rng(0).uniform(-1, 1, (5, 100, 90, 2)).astype(np.float32)
    np.save(tmp_path / "flow.npy", clip)
    np.testing.assert_array_equal(load_clip(tmp_path / "flow.npy", in_channels=2), clip)
    with pytest.raises(ValueError, match=r"flow.npy: expected an array \[T, H, W, 3\], got shape \(5, 100, 90, 2\)"):
        load_clip(tmp_path / "flow.npy", in_channels=3)


def test_corrupt_and_missing_videos_name_the_file(tmp_path):
    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        decode_video(corrupt)
    with pytest.raises(VideoDecodeError, match="absent.mp4: no such file"):
        decode_video(tmp_path / "absent.mp4")


def test_flow_clip_from_a_video_is_tvl1_of_the_resized_frames_cropped(tmp_path, monkeypatch):
    # A textured frame moving 2 px right per frame: the flow stream's input
    # is TV-L1 flow / 20, so x is about 0.1 in the interior and y about 0.
    noise = np.random.default_rng(0).integers(0, 255, (256, 300), np.uint8)
    texture = np.asarray(Image.fromarray(noise).filter(ImageFilter.GaussianBlur(2)))
    path = tmp_path / "moving.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 256, 256, "bgr0"
        for t in range(3):
            frame = np.repeat(texture[:256, 20 - 2 * t : 276 - 2 * t, None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    clip = load_clip(path, in_channels=2)
    assert clip.shape == (2, 224, 224, 2)
    interior = clip[:, 32:-32, 32:-32]
    assert abs(float(np.median(interior[..., 0])) - 0.1) < 0.01
    assert abs(float(np.median(interior[..., 1]))) < 0.01
    # N flow frames need N + 1 decoded frames. (Counted, not solved again: one
    # pair would compile the full-size solver a second time, for another batch.)
    from i3d_jax import flow

    solved = []

    def counting_tvl1_flow(frames, **kwargs):
        solved.append(len(frames))
        return np.zeros((len(frames) - 1, *frames.shape[1:3], 2), np.float32)

    monkeypatch.setattr(flow, "tvl1_flow", counting_tvl1_flow)
    assert load_clip(path, in_channels=2, max_frames=1).shape == (1, 224, 224, 2)
    assert solved == [2]
