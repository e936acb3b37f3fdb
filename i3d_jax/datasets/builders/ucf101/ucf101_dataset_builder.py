"""ucf101: UCF-101 with the official train/test splits 1, 2 and 3."""
from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

import tensorflow_datasets as tfds

from i3d_jax.datasets.raw import extract_archive, find_files, index_videos
from i3d_jax.datasets.video_builder import ClipSource, VideoBuilderConfig, VideoDatasetBuilder

log = logging.getLogger(__name__)

VIDEO_ARCHIVE = "UCF101.rar"
SPLITS_ARCHIVE = "UCF101TrainTestSplits-RecognitionTask.zip"


def _config(split: int, with_flow: bool) -> VideoBuilderConfig:
    return VideoBuilderConfig(
        name=f"{split}_flow" if with_flow else str(split),
        with_flow=with_flow,
        expected_num_classes=101,
        description=(f"UCF-101 split {split}: RGB at 25 fps, short side 256"
                     + (", TV-L1 flow" if with_flow else "")),
    )


def read_class_index(path: Path) -> list[str]:
    """classInd.txt ("1 ApplyEyeMakeup" a line) -> class names in label order."""
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{path}:{number}: expected 'INDEX CLASS', got {line!r}")
        entries.append((int(parts[0]), parts[1]))
    entries.sort()
    if [i for i, _ in entries] != list(range(1, len(entries) + 1)):
        raise ValueError(f"{path}: class indices are not 1..{len(entries)}")
    return [name for _, name in entries]


def read_split_list(path: Path) -> list[str]:
    """trainlist0N.txt ("Class/v_Class_g08_c01.avi 1") or testlist0N.txt ("Class/v_....avi")."""
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


class Builder(VideoDatasetBuilder):
    """UCF-101 action recognition videos (UCF CRCV), at 25 fps with the short side 256."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [_config(s, flow) for flow in (False, True) for s in (1, 2, 3)]
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
    From https://www.crcv.ucf.edu/data/UCF101.php put in manual_dir:
    - the videos: {VIDEO_ARCHIVE} extracted (UCF-101/<Class>/v_*.avi), or the
      archive itself (read with libarchive-c and the system libarchive);
    - the splits: {SPLITS_ARCHIVE}, or its extracted ucfTrainTestlist/
      (classInd.txt, trainlist0N.txt, testlist0N.txt).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.video_info(homepage="https://www.crcv.ucf.edu/data/UCF101.php")

    @property
    def split_number(self) -> int:
        return int(self.builder_config.name.split("_")[0])

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        extracted = Path(dl_manager.download_dir) / "extracted"
        lists = self._split_lists(root, extracted)
        names = read_class_index(lists / "classInd.txt")
        self.set_label_names(names)
        videos = self._videos(root, extracted)
        by_lower = {name.lower(): path for name, path in videos.items()}
        label_index = {name: i for i, name in enumerate(names)}
        n = self.split_number
        return {
            split: self._generate_examples(
                sources=self._sources(lists / f"{split}list0{n}.txt", videos, by_lower,
                                      label_index),
                split=split)
            for split in ("train", "test")
        }

    @staticmethod
    def _split_lists(root: Path, extracted: Path) -> Path:
        found = find_files(root, "classInd.txt")
        if not found:
            archives = find_files(root, SPLITS_ARCHIVE)
            if not archives:
                raise FileNotFoundError(
                    f"{root}: neither classInd.txt (ucfTrainTestlist/) nor {SPLITS_ARCHIVE}")
            found = find_files(extract_archive(archives[0], extracted / "ucf101_splits"),
                               "classInd.txt")
            if not found:
                raise FileNotFoundError(f"{archives[0]}: holds no classInd.txt")
        return found[0].parent

    @staticmethod
    def _videos(root: Path, extracted: Path) -> dict[str, Path]:
        videos = index_videos(root, suffixes=(".avi",))
        if videos:
            return videos
        archives = find_files(root, VIDEO_ARCHIVE)
        if not archives:
            raise FileNotFoundError(f"{root}: no .avi videos and no {VIDEO_ARCHIVE}")
        return index_videos(extract_archive(archives[0], extracted / "ucf101_videos"),
                            suffixes=(".avi",))

    @staticmethod
    def _sources(list_path: Path, videos, by_lower, label_index) -> list[ClipSource]:
        sources = []
        for entry in read_split_list(list_path):
            entry = PurePosixPath(entry.replace("\\", "/"))
            class_name = entry.parent.name
            if class_name not in label_index:
                raise ValueError(
                    f"{list_path}: class {class_name!r} of {entry} is not in classInd.txt")
            # File names and folders disagree in case in places (HandStandPushups).
            path = videos.get(entry.name) or by_lower.get(entry.name.lower())
            sources.append(ClipSource(entry.stem, label_index[class_name], class_name,
                                      str(path) if path else None))
        return sources
