"""kinetics: Kinetics-400, -600 and -700 from the official annotation CSVs and your clips."""
from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import tensorflow_datasets as tfds

from i3d_jax.datasets.raw import index_videos
from i3d_jax.datasets.video_builder import ClipSource, VideoBuilderConfig, VideoDatasetBuilder

log = logging.getLogger(__name__)

# Split -> annotation file names, as the releases spell them.
ANNOTATION_FILES = {
    "train": ("train.csv",),
    "validation": ("validate.csv", "val.csv"),
    "test": ("test.csv",),
}
# A trimmed clip: {youtube_id}_{start:06d}_{end:06d}.ext (YouTube ids may hold "_").
TRIMMED_NAME = re.compile(r"^(?P<youtube_id>.+)_(?P<start>\d{6})_(?P<end>\d{6})$")
REQUIRED_COLUMNS = ("youtube_id", "time_start", "time_end")


def _config(classes: int, with_flow: bool) -> VideoBuilderConfig:
    return VideoBuilderConfig(
        name=f"{classes}_flow" if with_flow else str(classes),
        with_flow=with_flow,
        expected_num_classes=classes,
        description=(f"Kinetics-{classes}: RGB at 25 fps, short side 256"
                     + (", TV-L1 flow" if with_flow else "")),
    )


def read_annotations(path: Path) -> list[dict]:
    """Rows of an official annotation CSV (label optional: unlabelled test sets)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; expected label, youtube_id, "
                             f"time_start, time_end, split (got {reader.fieldnames})")
        return list(reader)


def clip_id(youtube_id: str, start: int, end: int) -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}"


class Builder(VideoDatasetBuilder):
    """Kinetics human action videos (DeepMind), at 25 fps with the short side 256."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [_config(c, flow) for flow in (False, True) for c in (400, 600, 700)]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put in manual_dir (any sub-folders are searched):
    - the official annotations: train.csv, validate.csv (or val.csv), test.csv with
      columns label, youtube_id, time_start, time_end, split (test may lack label);
    - the videos, in any of the common layouts: {train,val,test}/{label}/ or one
      flat folder, each either the trimmed clip
      {youtube_id}_{time_start:06d}_{time_end:06d}.mp4 or the full video
      {youtube_id}.mp4 (cut to its annotated segment while building).
    Clips that are missing or cannot be decoded are skipped and listed in
    build_report-{split}.json beside the prepared data.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.video_info(homepage="https://github.com/google-deepmind/kinetics-i3d")

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        annotations = self._find_annotations(root)
        rows = {split: read_annotations(path) for split, path in annotations.items()}
        names = self._label_names(rows, annotations)
        self.set_label_names(names)
        videos = index_videos(root)
        trimmed, full = {}, {}
        for name, path in videos.items():
            stem = Path(name).stem
            match = TRIMMED_NAME.match(stem)
            if match:
                key = clip_id(match["youtube_id"], int(match["start"]), int(match["end"]))
                trimmed.setdefault(key, path)
            else:
                full.setdefault(stem, path)
        log.info("%s: %d trimmed clips and %d full videos under %s",
                 self.info.full_name, len(trimmed), len(full), root)
        label_index = {name: i for i, name in enumerate(names)}
        return {
            split: self._generate_examples(
                sources=[self._source(row, trimmed, full, label_index, annotations[split])
                         for row in split_rows],
                split=split)
            for split, split_rows in rows.items()
        }

    @staticmethod
    def _find_annotations(root: Path) -> dict[str, Path]:
        found = {}
        for split, names in ANNOTATION_FILES.items():
            for name in names:
                candidates = sorted(root.rglob(name), key=lambda p: (len(p.parts), str(p)))
                if candidates:
                    found[split] = candidates[0]
                    break
        if "train" not in found and "validation" not in found:
            raise FileNotFoundError(
                f"{root}: no Kinetics annotations (train.csv, validate.csv or val.csv, test.csv)")
        return found

    @staticmethod
    def _label_names(rows: dict, annotations: dict) -> list[str]:
        # Class index = position in the sorted class names (the released models' order).
        source = "train" if "train" in rows else "validation"
        names = sorted({row["label"] for row in rows[source] if row.get("label")})
        if not names:
            raise ValueError(f"{annotations[source]}: no labels in column 'label'")
        for split, split_rows in rows.items():
            unknown = {row["label"] for row in split_rows if row.get("label")} - set(names)
            if unknown:
                raise ValueError(f"{annotations[split]}: labels not in {annotations[source].name}: "
                                 f"{sorted(unknown)[:5]}")
        return names

    @staticmethod
    def _source(row, trimmed, full, label_index, csv_path) -> ClipSource:
        try:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
        except ValueError:
            raise ValueError(f"{csv_path}: bad time_start/time_end in row {row}") from None
        youtube_id = row["youtube_id"]
        video_id = clip_id(youtube_id, start, end)
        label_name = row.get("label") or ""
        label = label_index[label_name] if label_name else -1
        if video_id in trimmed:
            return ClipSource(video_id, label, label_name, str(trimmed[video_id]))
        if youtube_id in full:
            return ClipSource(video_id, label, label_name, str(full[youtube_id]),
                              start=float(start), end=float(end))
        return ClipSource(video_id, label, label_name, None)
