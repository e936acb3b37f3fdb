"""hmdb51: HMDB-51 with the official train/test splits 1, 2 and 3."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import tensorflow_datasets as tfds

from i3d_jax.datasets.raw import (
    extract_archive, extract_nested_archives, find_files, index_videos,
)
from i3d_jax.datasets.video_builder import ClipSource, VideoBuilderConfig, VideoDatasetBuilder

log = logging.getLogger(__name__)

HOMEPAGE = "https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/"
VIDEO_ARCHIVE = "hmdb51_org.rar"
SPLITS_ARCHIVE = "test_train_splits.rar"
SPLIT_FILE = re.compile(r"^(?P<label>.+)_test_split(?P<split>[123])\.txt$")
# The split files' tags: 1 = training, 2 = testing, 0 = in neither.
TAGS = {"1": "train", "2": "test"}


def _config(split: int, with_flow: bool) -> VideoBuilderConfig:
    return VideoBuilderConfig(
        name=f"{split}_flow" if with_flow else str(split),
        with_flow=with_flow,
        expected_num_classes=51,
        description=(f"HMDB-51 split {split}: RGB at 25 fps, short side 256"
                     + (", TV-L1 flow" if with_flow else "")),
    )


def read_split_file(path: Path) -> list[tuple[str, str]]:
    """`{class}_test_split{N}.txt` ("video.avi TAG" a line) -> [(file name, tag)]."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise ValueError(f"{path}:{number}: expected 'VIDEO.avi 0|1|2', got {line!r}")
        rows.append((parts[0], parts[1]))
    return rows


class Builder(VideoDatasetBuilder):
    """HMDB-51 human motion videos (Serre lab), at 25 fps with the short side 256."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [_config(s, flow) for flow in (False, True) for s in (1, 2, 3)]
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
    From https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/
    put in manual_dir:
    - the videos: {VIDEO_ARCHIVE} extracted (one folder of .avi per class; the
      per-class .rar files inside are unpacked too), or the archive itself (read
      with libarchive-c and the system libarchive);
    - the splits: {SPLITS_ARCHIVE}, or its extracted *_test_split{{1,2,3}}.txt files.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.video_info(homepage=HOMEPAGE)

    @property
    def split_number(self) -> int:
        return int(self.builder_config.name.split("_")[0])

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        extracted = Path(dl_manager.download_dir) / "extracted"
        split_files = self._split_files(root, extracted)
        names = sorted(split_files)
        self.set_label_names(names)
        videos = self._videos(root, extracted)
        sources = {"train": [], "test": []}
        for label, name in enumerate(names):
            for file_name, tag in read_split_file(split_files[name]):
                if tag in TAGS:
                    path = videos.get(file_name)
                    sources[TAGS[tag]].append(ClipSource(
                        Path(file_name).stem, label, name, str(path) if path else None))
        return {split: self._generate_examples(sources=split_sources, split=split)
                for split, split_sources in sources.items()}

    def _split_files(self, root: Path, extracted: Path) -> dict[str, Path]:
        pattern = f"*_test_split{self.split_number}.txt"
        found = find_files(root, pattern)
        if not found:
            archives = find_files(root, SPLITS_ARCHIVE)
            if not archives:
                raise FileNotFoundError(f"{root}: neither {pattern} files nor {SPLITS_ARCHIVE}")
            found = find_files(extract_archive(archives[0], extracted / "hmdb51_splits"), pattern)
        files = {}
        for path in found:
            files.setdefault(SPLIT_FILE.match(path.name)["label"], path)
        if not files:
            raise FileNotFoundError(f"{root}: no {pattern} split files")
        return files

    @staticmethod
    def _videos(root: Path, extracted: Path) -> dict[str, Path]:
        videos = index_videos(root, suffixes=(".avi",))
        if videos:
            return videos
        archives = find_files(root, VIDEO_ARCHIVE)
        if not archives:
            raise FileNotFoundError(f"{root}: no .avi videos and no {VIDEO_ARCHIVE}")
        target = extract_archive(archives[0], extracted / "hmdb51_videos")
        extract_nested_archives(target)  # the release packs each class in its own .rar
        return index_videos(target, suffixes=(".avi",))
