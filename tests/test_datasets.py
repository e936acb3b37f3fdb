"""The TFDS builders, built from tiny fake releases in the official layouts."""
import json
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

import i3d_jax.datasets as datasets
from conftest import require_test_package
from fake_videos import (
    LEVELS, decoded_levels, write_corrupt_video, write_stored_rar, write_video,
)
from i3d_jax.datasets.video_builder import read_build_report

REPO = Path(__file__).resolve().parents[1]
KINETICS_HEADER = "label,youtube_id,time_start,time_end,split\n"


@pytest.fixture
def no_gcs(monkeypatch):
    """Any look at Google Cloud Storage fails the test."""
    import tensorflow as tf
    from tensorflow_datasets.core.utils import gcs_utils

    def refuse(*args, **kwargs):
        raise AssertionError(f"GCS accessed: {args}")

    for name in ("exists", "download_gcs_folder", "download_gcs_dataset"):
        monkeypatch.setattr(gcs_utils, name, refuse)
    for name in ("exists", "glob", "isdir", "listdir", "stat", "walk", "GFile"):
        original = getattr(tf.io.gfile, name)

        def guarded(path, *args, _original=original, **kwargs):
            if str(path).startswith("gs://"):
                refuse(path)
            return _original(path, *args, **kwargs)

        monkeypatch.setattr(tf.io.gfile, name, guarded)


def build(name, data_dir, manual_dir=None, **download_config):
    builder = tfds.builder(name, data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual_dir) if manual_dir else None, **download_config))
    return builder


def examples(builder, split):
    return {e["video_id"].decode(): e for e in tfds.as_numpy(builder.as_dataset(split=split))}


# --------------------------------------------------------------------------
# Registration and offline use


def test_builders_registered_by_name_and_offline(no_gcs, tmp_path):
    for name, config, module_dir in (("kinetics", "400", "kinetics"), ("ucf101", "2", "ucf101"),
                                     ("hmdb51", "3_flow", "hmdb51"),
                                     ("synthetic_motion", "default", "synthetic_motion")):
        builder = tfds.builder(f"{name}/{config}", data_dir=str(tmp_path))
        assert builder.name == name and builder.builder_config.name == config
        package_dir = REPO / "i3d_jax" / "datasets" / "builders" / module_dir
        assert Path(builder.code_path) == package_dir / f"{name}_dataset_builder.py"
        assert builder.info.description == (package_dir / "README.md").read_text().strip()
        assert "label" in builder.info.features
    assert datasets.builder_names() == sorted(datasets.BUILDER_NAMES)
    # The project's ucf101 shadows TFDS's catalogue builder of that name.
    assert tfds.builder_cls("ucf101") is datasets.builder_class("ucf101")
    assert "flow" in tfds.builder("ucf101/1_flow", data_dir=str(tmp_path)).info.features
    with pytest.raises(tfds.core.registered.DatasetNotFoundError):
        tfds.builder("no_such_dataset_here", data_dir=str(tmp_path))


# --------------------------------------------------------------------------
# Kinetics


def kinetics_release(root: Path) -> Path:
    """Annotations and clips in the common layouts, with one missing and one corrupt clip."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir()
    (root / "annotations" / "train.csv").write_text(
        KINETICS_HEADER
        + "zumba,zz_z-zzzzz1,0,10,train\n"
        + "abseiling,aaaaaaaaaa1,10,20,train\n"
        + "abseiling,full_video_,1,2,train\n"
        + "zumba,missingvid4,5,15,train\n"
        + "zumba,corruptvid5,5,15,train\n"
        + "\"passing American football (in game)\",pppppppppp1,0,10,train\n")
    (root / "annotations" / "validate.csv").write_text(
        KINETICS_HEADER + "zumba,ddddddddddd,3,13,val\n")
    # Kinetics-700's test set has no labels.
    (root / "annotations" / "test.csv").write_text(
        "youtube_id,time_start,time_end,split\neeeeeeeeeee,0,10,test\n")
    train = root / "train"
    write_video(train / "abseiling" / "aaaaaaaaaa1_000010_000020.mp4", num_frames=15, fps=30)
    write_video(train / "zumba" / "zz_z-zzzzz1_000000_000010.mp4", num_frames=10)
    write_video(train / "passing American football (in game)" / "pppppppppp1_000000_000010.mp4",
                num_frames=4, width=48, height=64)
    write_video(root / "full" / "full_video_.mp4", num_frames=75)  # cut to 1-2 s
    write_corrupt_video(train / "zumba" / "corruptvid5_000005_000015.mp4")
    write_video(root / "val" / "zumba" / "ddddddddddd_000003_000013.mp4", num_frames=8)
    write_video(root / "eeeeeeeeeee_000000_000010.mp4", num_frames=8)  # flat layout
    return root


def test_kinetics_builds_every_layout_and_reports_bad_clips(no_gcs, tmp_path, caplog):
    manual = kinetics_release(tmp_path / "manual")
    with caplog.at_level(logging.WARNING):
        builder = build("kinetics/400", tmp_path / "data", manual)
    assert builder.info.features["label"].names == [
        "abseiling", "passing American football (in game)", "zumba"]
    assert {s: builder.info.splits[s].num_examples for s in ("train", "validation", "test")} == {
        "train": 4, "validation": 1, "test": 1}

    train = examples(builder, "train")
    assert sorted(train) == ["aaaaaaaaaa1_000010_000020", "full_video__000001_000002",
                             "pppppppppp1_000000_000010", "zz_z-zzzzz1_000000_000010"]
    trimmed = train["aaaaaaaaaa1_000010_000020"]
    assert trimmed["label"] == 0 and trimmed["label_name"] == b"abseiling"
    # 15 frames at 30 fps are 0.5 s: 12 frames at 25 fps, each the last source frame shown.
    assert trimmed["video"].shape == (12, 256, 341, 3)
    np.testing.assert_array_equal(decoded_levels(trimmed["video"]),
                                  [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13])
    assert trimmed["fps"] == pytest.approx(30.0)
    # A full video is cut to its segment: 1 s to 2 s of 25 fps is source frames 25..49.
    cut = train["full_video__000001_000002"]
    assert cut["video"].shape == (25, 256, 341, 3)
    np.testing.assert_array_equal(decoded_levels(cut["video"]), np.arange(25, 50) % LEVELS)
    portrait = train["pppppppppp1_000000_000010"]
    assert portrait["video"].shape == (4, 341, 256, 3) and portrait["label"] == 1
    assert train["zz_z-zzzzz1_000000_000010"]["label"] == 2

    (test_clip,) = examples(builder, "test").values()
    assert test_clip["label"] == -1 and test_clip["label_name"] == b""
    (validation_clip,) = examples(builder, "validation").values()
    assert validation_clip["label_name"] == b"zumba" and validation_clip["video"].shape[0] == 8

    report = read_build_report(builder.data_dir, "train")
    assert (report["clips_listed"], report["clips_written"]) == (6, 4)
    assert {(s["video_id"], s["problem"]) for s in report["skipped"]} == {
        ("missingvid4_000005_000015", "missing"), ("corruptvid5_000005_000015", "undecodable")}
    assert read_build_report(builder.data_dir, "validation")["skipped"] == []
    assert any("skipped 2 of 6 clips (1 missing, 1 undecodable)" in r.getMessage()
               for r in caplog.records)


def run_build_command(program, dataset, manual, data_dir):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [*program, dataset, "--config=600", f"--manual_dir={manual}",
               f"--data_dir={data_dir}"]
    # From outside the checkout: nothing is found through the working directory.
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300,
                            cwd=data_dir.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    prepared = data_dir / "kinetics" / "600" / "1.0.0"
    info = json.loads((prepared / "dataset_info.json").read_text())
    counts = {s["name"]: sum(int(n) for n in s["shardLengths"]) for s in info["splits"]}
    assert counts == {"train": 4, "validation": 1, "test": 1}
    assert json.loads((prepared / "build_report-train.json").read_text())["clips_written"] == 4


@pytest.mark.slow
def test_kinetics_with_the_build_command(tmp_path):
    # By name, as an installed package (no checkout) builds it.
    manual = kinetics_release(tmp_path / "manual")
    run_build_command([sys.executable, "-m", "i3d_jax.datasets.build"], "kinetics", manual,
                      tmp_path / "data")


@pytest.mark.slow
def test_kinetics_with_tfds_build(tmp_path):
    # TFDS 4.9.10's `tfds` program cannot start without apache-beam and mlcroissant.
    require_test_package("apache_beam", "TFDS's tfds program")
    require_test_package("mlcroissant", "TFDS's tfds program")
    manual = kinetics_release(tmp_path / "manual")
    # From the checkout's data/kinetics, as TFDS documents for dataset folders.
    run_build_command([str(Path(sys.executable).with_name("tfds")), "build"],
                      str(REPO / "data" / "kinetics"), manual, tmp_path / "data")


# --------------------------------------------------------------------------
# UCF-101 and HMDB-51


def ucf101_release(root: Path, archive: bool) -> Path:
    videos = {
        "ApplyEyeMakeup": ["v_ApplyEyeMakeup_g01_c01", "v_ApplyEyeMakeup_g08_c01"],
        # The release's folder and file names disagree in case for this class.
        "HandstandPushups": ["v_HandStandPushups_g01_c01", "v_HandStandPushups_g08_c02"],
    }
    files = {}
    source = root / "UCF-101" if not archive else root.parent / "ucf_source"
    for label, (name_a, name_b) in videos.items():
        for i, name in enumerate((name_a, name_b)):
            path = write_video(source / label / f"{name}.avi", num_frames=6 + i)
            files[f"UCF-101/{label}/{name}.avi"] = path.read_bytes()
    if archive:
        write_stored_rar(root / "UCF101.rar", files)
    splits = {"classInd.txt": "1 ApplyEyeMakeup\n2 HandstandPushups\n"}
    for n in (1, 2, 3):
        # Split 2 swaps train and test.
        train, test = ("g08", "g01") if n != 2 else ("g01", "g08")
        splits[f"trainlist0{n}.txt"] = "".join(
            f"{label}/{name}.avi {i + 1}\n" for i, (label, names) in enumerate(videos.items())
            for name in names if train in name)
        splits[f"testlist0{n}.txt"] = "".join(
            f"{label}/{name}.avi\n" for label, names in videos.items() for name in names
            if test in name)
    if archive:
        with zipfile.ZipFile(root / "UCF101TrainTestSplits-RecognitionTask.zip", "w") as z:
            for name, text in splits.items():
                z.writestr(f"ucfTrainTestlist/{name}", text)
    else:
        for name, text in splits.items():
            (root / "ucfTrainTestlist").mkdir(parents=True, exist_ok=True)
            (root / "ucfTrainTestlist" / name).write_text(text)
    return root


def test_ucf101_from_extracted_folders(no_gcs, tmp_path):
    manual = ucf101_release(tmp_path / "manual", archive=False)
    builder = build("ucf101/2", tmp_path / "data", manual)
    assert builder.info.features["label"].names == ["ApplyEyeMakeup", "HandstandPushups"]
    train, test = examples(builder, "train"), examples(builder, "test")
    assert sorted(train) == ["v_ApplyEyeMakeup_g01_c01", "v_HandStandPushups_g01_c01"]
    assert sorted(test) == ["v_ApplyEyeMakeup_g08_c01", "v_HandStandPushups_g08_c02"]
    assert test["v_HandStandPushups_g08_c02"]["label"] == 1
    assert test["v_HandStandPushups_g08_c02"]["label_name"] == b"HandstandPushups"
    assert test["v_HandStandPushups_g08_c02"]["video"].shape == (7, 256, 341, 3)


def test_ucf101_from_the_rar_and_zip_archives(no_gcs, tmp_path):
    require_test_package("libarchive", "reading RAR archives")
    manual = ucf101_release(tmp_path / "manual", archive=True)
    assert not list(manual.rglob("*.avi"))
    builder = build("ucf101/1", tmp_path / "data", manual)
    train = examples(builder, "train")
    assert sorted(train) == ["v_ApplyEyeMakeup_g08_c01", "v_HandStandPushups_g08_c02"]
    np.testing.assert_array_equal(decoded_levels(train["v_ApplyEyeMakeup_g08_c01"]["video"]),
                                  np.arange(7))


def test_hmdb51_from_nested_rars_with_split_tags(no_gcs, tmp_path):
    require_test_package("libarchive", "reading RAR archives")
    manual = tmp_path / "manual"
    source = tmp_path / "source"
    tags = {"brush_hair": {"April_brush_hair_u_nm_np1_ba_goo_0.avi": "1",
                           "April_brush_hair_u_nm_np1_ba_goo_1.avi": "2",
                           "April_brush_hair_u_nm_np1_ba_goo_2.avi": "0"},
            "cartwheel": {"Bodenturnen_cartwheel_f_cm_np1_le_med_0.avi": "2",
                          "Bodenturnen_cartwheel_f_cm_np1_le_med_1.avi": "1"}}
    class_rars = {}
    for label, videos in tags.items():
        files = {f"{label}/{name}": write_video(source / label / name, num_frames=5).read_bytes()
                 for name in videos}
        class_rar = write_stored_rar(source / f"{label}.rar", files)
        class_rars[f"hmdb51_org/{label}.rar"] = class_rar.read_bytes()
    write_stored_rar(manual / "hmdb51_org.rar", class_rars)
    split_files = {}
    for n in (1, 2, 3):
        for label, videos in tags.items():
            split_files[f"testTrainMulti_7030_splits/{label}_test_split{n}.txt"] = "".join(
                f"{name} {tag if n == 3 else '1'} \n" for name, tag in videos.items()).encode()
    write_stored_rar(manual / "test_train_splits.rar", split_files)

    builder = build("hmdb51/3", tmp_path / "data", manual)
    assert builder.info.features["label"].names == ["brush_hair", "cartwheel"]
    train, test = examples(builder, "train"), examples(builder, "test")
    assert sorted(train) == ["April_brush_hair_u_nm_np1_ba_goo_0",
                             "Bodenturnen_cartwheel_f_cm_np1_le_med_1"]
    assert sorted(test) == ["April_brush_hair_u_nm_np1_ba_goo_1",
                            "Bodenturnen_cartwheel_f_cm_np1_le_med_0"]
    assert test["Bodenturnen_cartwheel_f_cm_np1_le_med_0"]["label"] == 1
    assert train["April_brush_hair_u_nm_np1_ba_goo_0"]["video"].shape == (5, 256, 341, 3)


# --------------------------------------------------------------------------
# Flow


def coordinate_flow(frames):
    """A stand-in flow function: x = frame index, y = 200 (uint8, one field per frame)."""
    t = np.arange(len(frames), dtype=np.uint8)[:, None, None]
    flow = np.empty(frames.shape[:3] + (2,), np.uint8)
    flow[..., 0] = 10 * t
    flow[..., 1] = 200
    return flow


def test_flow_is_stored_losslessly_with_two_channels(no_gcs, tmp_path, monkeypatch):
    builder_class = datasets.builder_class("ucf101")
    monkeypatch.setattr(builder_class, "flow_function", staticmethod(coordinate_flow))
    builder = build("ucf101/1_flow", tmp_path / "data",
                    ucf101_release(tmp_path / "manual", archive=False))
    example = examples(builder, "train")["v_HandStandPushups_g08_c02"]
    assert example["flow"].shape == (7, 256, 341, 2) and example["flow"].dtype == np.uint8
    np.testing.assert_array_equal(example["flow"][:, 0, 0, 0], 10 * np.arange(7))
    assert (example["flow"][..., 1] == 200).all()
    assert example["video"].shape[0] == example["flow"].shape[0]


def test_tvl1_flow_is_aligned_with_the_frames():
    from i3d_jax.datasets.video_builder import tvl1_flow_uint8

    # 3 frames of 256x256: the default solver compiled for the shape that
    # test_video's flow clip uses too, so the suite compiles it once.
    y, x = np.mgrid[0:256, 0:256]
    frames = np.stack([(128 + 60 * np.sin((x - 2 * t) / 3.0) * np.cos(y / 4.0)).astype(np.uint8)
                       for t in range(3)])
    frames = np.repeat(frames[..., None], 3, axis=-1)
    flow = tvl1_flow_uint8(frames)
    assert flow.shape == (3, 256, 256, 2) and flow.dtype == np.uint8
    np.testing.assert_array_equal(flow[2], flow[1])  # the last field is repeated
    # The pattern moves 2 px right a frame: x flow about +2 px (u8 = (2 + 20) * 255 / 40 = 140).
    assert abs(np.median(flow[0, 8:-8, 8:-8, 0].astype(int)) - 140) <= 4


# --------------------------------------------------------------------------
# Beam


@pytest.mark.slow
def test_beam_build_matches_the_in_process_build(no_gcs, tmp_path):
    require_test_package("apache_beam", "a Beam build")
    from apache_beam.options.pipeline_options import PipelineOptions

    manual = kinetics_release(tmp_path / "manual")
    local = build("kinetics/700", tmp_path / "local", manual)
    beam = build("kinetics/700", tmp_path / "beam", manual,
                 beam_options=PipelineOptions(["--runner=DirectRunner"]))
    for split in ("train", "validation", "test"):
        expected, got = examples(local, split), examples(beam, split)
        assert sorted(got) == sorted(expected)
        for video_id, example in expected.items():
            np.testing.assert_array_equal(got[video_id]["video"], example["video"])
            assert got[video_id]["label"] == example["label"]
    report = read_build_report(beam.data_dir, "train")
    assert {s["video_id"] for s in report["skipped"]} == {
        "missingvid4_000005_000015", "corruptvid5_000005_000015"}


# --------------------------------------------------------------------------
# Your own videos: video_folder


def test_a_folder_of_labelled_clips_builds_with_its_classes_and_skips_a_corrupt_one(
        no_gcs, tmp_path, caplog):
    root = tmp_path / "clips"
    for split, count in (("train", 2), ("test", 1)):
        for label in ("waving", "clapping"):
            for i in range(count):
                write_video(root / split / label / f"{label}_{i}.mp4", num_frames=10,
                            first_level=3 * i)
    write_corrupt_video(root / "train" / "waving" / "broken.mp4")
    with caplog.at_level(logging.INFO):
        builder = build("video_folder/rgb", tmp_path / "data", root)
    assert builder.info.features["label"].names == ["clapping", "waving"]
    train = examples(builder, "train")
    assert sorted(train) == ["train/clapping/clapping_0", "train/clapping/clapping_1",
                             "train/waving/waving_0", "train/waving/waving_1"]
    example = train["train/waving/waving_1"]
    assert (example["label"], example["label_name"].decode()) == (1, "waving")
    assert example["video"].shape[0] == 10 and min(example["video"].shape[1:3]) == 256
    assert list(decoded_levels(example["video"])) == [(3 + i) % LEVELS for i in range(10)]
    assert sorted(examples(builder, "test")) == ["test/clapping/clapping_0", "test/waving/waving_0"]
    report = read_build_report(builder.data_dir, "train")
    assert [f["video_id"] for f in report["skipped"]] == ["train/waving/broken"]
    assert report["clips_written"] == 4 and "skipping train/waving/broken" in caplog.text


def test_list_files_name_clips_and_labels_as_mmaction2_does(no_gcs, tmp_path):
    root = tmp_path / "clips"
    for name, level in (("a", 0), ("b", 5), ("c", 9)):
        write_video(root / "videos" / f"{name}.mp4", num_frames=6, first_level=level)
    (root / "classes.txt").write_text("jump\nrun\nswim\n")
    (root / "train.txt").write_text("videos/a.mp4 2\nvideos/b.mp4 run\n\n")
    (root / "val.txt").write_text("videos/c.mp4 0\n")
    builder = build("video_folder/rgb", tmp_path / "data", root)
    assert builder.info.features["label"].names == ["jump", "run", "swim"]
    labels = {k: int(v["label"]) for k, v in examples(builder, "train").items()}
    assert labels == {"videos/a": 2, "videos/b": 1}
    assert {k: int(v["label"]) for k, v in examples(builder, "val").items()} == {"videos/c": 0}


def test_a_bad_list_line_or_an_empty_folder_is_named(tmp_path):
    from i3d_jax.datasets.builders.video_folder.video_folder_dataset_builder import read_list_file

    (tmp_path / "train.txt").write_text("videos/a.mp4 1\njust_a_path.mp4\n")
    with pytest.raises(ValueError, match=r"train.txt:2: expected 'PATH LABEL'"):
        read_list_file(tmp_path / "train.txt")
    # A folder that holds something, but no <split>/<label>/ clips (TFDS itself refuses
    # an empty one, naming it).
    (tmp_path / "no_clips").mkdir()
    (tmp_path / "no_clips" / "README.md").write_text("clips to come\n")
    with pytest.raises(FileNotFoundError, match="no_clips: no clips found"):
        build("video_folder/rgb", tmp_path / "data", tmp_path / "no_clips")
