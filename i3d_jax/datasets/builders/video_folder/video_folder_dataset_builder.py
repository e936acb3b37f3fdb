"""video_folder: a dataset of your own labelled clips.

`manual_dir` holds the clips in one of two layouts:

- folders: `<split>/<label>/<clip>.mp4` (any suffix of `i3d_jax.video.VIDEO_SUFFIXES`),
  one folder per split (`train`, `test`, `validation`, ...) and per class;
- list files: `<split>.txt`, one `path label` line per clip (MMAction2's
  layout), `path` relative to `manual_dir` (or absolute), `label` a class name
  or an index; indices take their names from `classes.txt` (one name a line,
  in index order) where it exists, else are named by their number.

The classes are the union over every split, sorted by name (folders), or
`classes.txt`'s order. Each split's examples are stored as every builder here
stores them (`video_builder.py`); unreadable clips are reported and skipped.
"""
from __future__ import annotations

import logging
from pathlib import Path

import tensorflow_datasets as tfds

from i3d_jax.datasets.video_builder import ClipSource, VideoBuilderConfig, VideoDatasetBuilder
from i3d_jax.video import VIDEO_SUFFIXES

log = logging.getLogger(__name__)

CLASSES_FILE = "classes.txt"


def _video_id(path: Path, root: Path) -> str:
    """The clip's path under `root` without its suffix: unique within a split."""
    try:
        return path.relative_to(root).with_suffix("").as_posix()
    except ValueError:  # an absolute path elsewhere
        return path.with_suffix("").as_posix()


def folder_splits(root: Path) -> dict[str, dict[str, list[Path]]]:
    """{split: {label: [clip paths]}} of `root/<split>/<label>/*` (sorted)."""
    splits = {}
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        labels = {}
        for label_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            clips = sorted(p for p in label_dir.iterdir()
                           if p.is_file() and p.name.lower().endswith(VIDEO_SUFFIXES))
            if clips:
                labels[label_dir.name] = clips
        if labels:
            splits[split_dir.name] = labels
    return splits


def read_list_file(path: Path) -> list[tuple[str, str]]:
    """(clip path, label) of each `path label` line; a clear error for any other line."""
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected 'PATH LABEL', got {line!r}")
        entries.append((parts[0].strip(), parts[1]))
    if not entries:
        raise ValueError(f"{path}: no 'PATH LABEL' lines")
    return entries


def list_splits(root: Path) -> dict[str, list[tuple[str, str]]]:
    return {p.stem: read_list_file(p) for p in sorted(root.glob("*.txt"))
            if p.name != CLASSES_FILE}


def label_names(root: Path, labels_seen: set[str]) -> list[str]:
    """The class names in label order: classes.txt where it exists (every label
    seen must be a name in it or an index into it), else the labels seen, sorted
    (numbers by value)."""
    classes_file = root / CLASSES_FILE
    if classes_file.exists():
        names = [line.strip() for line in classes_file.read_text().splitlines() if line.strip()]
        unknown = sorted(label for label in labels_seen
                         if label not in names and not (label.isdigit() and int(label) < len(names)))
        if unknown:
            raise ValueError(f"{classes_file}: labels {unknown[:5]} are neither names in it nor "
                             f"indices below {len(names)}")
        return names
    if all(label.isdigit() for label in labels_seen):
        return [str(i) for i in range(max(int(label) for label in labels_seen) + 1)]
    return sorted(labels_seen)


def _label_index(label: str, names: list[str]) -> int:
    return names.index(label) if label in names else int(label)


def _config(name: str, with_flow: bool) -> VideoBuilderConfig:
    return VideoBuilderConfig(
        name=name, with_flow=with_flow,
        description="your clips: RGB at 25 fps, short side 256" + (", TV-L1 flow" if with_flow
                                                                  else ""))


class Builder(VideoDatasetBuilder):
    """Your own labelled videos, from a folder per split and class or from list files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [_config("rgb", False), _config("flow", True)]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Point manual_dir at your clips: DIR/<split>/<label>/*.mp4 (e.g. train/, test/),
    or DIR/<split>.txt files of 'path label' lines (paths relative to DIR; labels
    names, or indices named by DIR/classes.txt).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.video_info()

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder of clips (manual_dir)")
        lists = list_splits(root)
        if lists:
            names = label_names(root, {label for entries in lists.values()
                                       for _, label in entries})
            sources = {split: [self._source(root / path, _label_index(label, names), names, root)
                               for path, label in entries]
                       for split, entries in lists.items()}
        else:
            folders = folder_splits(root)
            if not folders:
                raise FileNotFoundError(
                    f"{root}: no clips found: expected {root}/<split>/<label>/<clip>.mp4 folders "
                    f"or {root}/<split>.txt lists of 'path label' lines")
            names = sorted({label for labels in folders.values() for label in labels})
            sources = {split: [self._source(path, names.index(label), names, root)
                               for label, paths in labels.items() for path in paths]
                       for split, labels in folders.items()}
        self.set_label_names(names)
        log.info("%s: %d classes; %s", root, len(names),
                 ", ".join(f"{split} {len(s)} clips" for split, s in sources.items()))
        return {split: self._generate_examples(sources=s, split=split)
                for split, s in sources.items()}

    @staticmethod
    def _source(path: Path, label: int, names: list[str], root: Path) -> ClipSource:
        if not 0 <= label < len(names):
            raise ValueError(f"{path}: label {label} is out of range for {len(names)} classes")
        return ClipSource(_video_id(path, root), label, names[label],
                          str(path) if path.exists() else None)
