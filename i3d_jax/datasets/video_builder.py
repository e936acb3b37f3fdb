"""What every video dataset builder in `builders/` shares.

One feature set for every dataset (`video_features`): RGB frames at 25 fps
with the short side resized (JPEG), optional TV-L1 flow quantised to uint8
(2-channel PNG, lossless), the label, its name, the video id and the source's
frame rate. `VideoDatasetBuilder` turns a list of `ClipSource`s into examples,
in plain Python or, when the build is given a Beam runner or options, as an
Apache Beam PTransform; clips that are missing or cannot be decoded are
skipped and listed in a build report beside the prepared data.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import inspect
import io
import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image
# TF itself (seconds to import, hundreds of MB) loads on first use, so
# importing the builders and the synthetic renderer stays light.
from tensorflow_datasets.core.utils.lazy_imports_utils import tensorflow as tf

from i3d_jax.atomic_file import write_atomically
from i3d_jax.datasets.tf_setup import hide_gpus_from_tf
from i3d_jax.video import VideoDecodeError, decode_video, resize_short_side

log = logging.getLogger(__name__)

DEFAULT_FPS = 25.0
DEFAULT_SHORT_SIDE = 256
DEFAULT_JPEG_QUALITY = 90
REPORT_PREFIX = "build_report-"


# --------------------------------------------------------------------------
# Features


class FlowFrame(tfds.features.Image):
    """One flow field [H, W, 2] uint8 (x then y), stored as a 2-channel PNG.

    `tf.io.decode_image` refuses `channels=2`, so decoding asks for the
    file's own channel count (a grey+alpha PNG has two).
    """

    def __init__(self, shape=(None, None, 2), dtype=np.uint8, encoding_format="png",
                 use_colormap=False, doc=None):
        if tuple(shape)[-1] != 2 or encoding_format != "png":
            raise ValueError(
                f"FlowFrame stores 2-channel PNG frames; got shape {shape}, "
                f"encoding {encoding_format!r}"
            )
        super().__init__(shape=shape, dtype=dtype, encoding_format="png",
                         use_colormap=use_colormap, doc=doc)

    def decode_example(self, example):
        image = tf.io.decode_png(example, channels=0)
        image.set_shape(self.shape)
        return image

    def decode_example_np(self, example: bytes) -> np.ndarray:
        # PIL, not OpenCV: OpenCV expands grey+alpha PNGs to four channels.
        with Image.open(io.BytesIO(example)) as image:
            return np.asarray(image, dtype=np.uint8)


def video_features(*, with_flow: bool, frame_shape=(None, None), doc_fps: float = DEFAULT_FPS):
    """The feature set every video builder stores."""
    height, width = frame_shape
    features = {
        "video": tfds.features.Video(
            shape=(None, height, width, 3), encoding_format="jpeg",
            doc=f"RGB frames resampled to {doc_fps:g} fps, JPEG",
        ),
        "label": tfds.features.ClassLabel(doc="class index (-1 where the split has no labels)"),
        "label_name": tfds.features.Text(doc="class name ('' where unlabelled)"),
        "video_id": tfds.features.Text(),
        "fps": tfds.features.Scalar(np.float32, doc="frame rate of the source video"),
    }
    if with_flow:
        # Stored as `quantize_flow` writes it (JAX: imported only when flow is asked for).
        from i3d_jax.flow import FLOW_BOUND

        features["flow"] = tfds.features.Sequence(
            FlowFrame(shape=(height, width, 2)),
            doc=(
                f"TV-L1 flow from frame t to t+1 (x then y) truncated to +-{FLOW_BOUND:g} px, "
                f"u8 = round((f + {FLOW_BOUND:g}) * 255 / {2 * FLOW_BOUND:g}); the last field "
                "is repeated so that flow and video have the same number of frames"
            ),
        )
    return tfds.features.FeaturesDict(features)


# --------------------------------------------------------------------------
# Configs and sources


@dataclasses.dataclass
class VideoBuilderConfig(tfds.core.BuilderConfig):
    """How clips are stored: frame rate, short side, JPEG quality, with or without flow."""

    with_flow: bool = False
    short_side: int = DEFAULT_SHORT_SIDE
    fps: float = DEFAULT_FPS
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    # The number of classes the official release has; a different count in
    # the files given is logged (subsets are allowed).
    expected_num_classes: int | None = None


@dataclasses.dataclass(frozen=True)
class ClipSource:
    """Where one example comes from.

    `path` None means the clip was not found. `start`/`end` (seconds) cut a
    segment out of a longer video; None uses the whole file.
    """

    video_id: str
    label: int
    label_name: str
    path: str | None
    start: float | None = None
    end: float | None = None


def tvl1_flow_uint8(frames: np.ndarray) -> np.ndarray:
    """TV-L1 flow of uint8 frames [T, H, W, 3] as stored: uint8 [T, H, W, 2].

    T frames give T-1 fields; the last one is repeated so that flow frame t
    belongs to video frame t (a one-frame video gets zero flow).
    """
    from i3d_jax.flow import quantize_flow, tvl1_flow  # JAX: only when flow is asked for

    if len(frames) < 2:
        fields = np.zeros((1,) + frames.shape[1:3] + (2,), np.float32)
    else:
        fields = tvl1_flow(frames)
    return repeat_last_field(quantize_flow(fields), len(frames))


def repeat_last_field(fields: np.ndarray, num_frames: int) -> np.ndarray:
    """[T-1, H, W, 2] -> [T, H, W, 2] by repeating the last field."""
    if len(fields) != max(num_frames - 1, 1):
        raise ValueError(
            f"expected {max(num_frames - 1, 1)} flow fields for {num_frames} frames, "
            f"got {len(fields)}"
        )
    if num_frames == len(fields):
        return fields
    return np.concatenate([fields, fields[-1:]], axis=0)


def encode_jpeg_frames(frames: np.ndarray, quality: int) -> list[bytes]:
    out = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
        out.append(buffer.getvalue())
    return out


def encode_flow_frames(flow_u8: np.ndarray) -> list[bytes]:
    if flow_u8.dtype != np.uint8 or flow_u8.ndim != 4 or flow_u8.shape[-1] != 2:
        raise ValueError(f"expected uint8 flow [T, H, W, 2], got {flow_u8.dtype} {flow_u8.shape}")
    out = []
    for field in flow_u8:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(field)).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


@dataclasses.dataclass(frozen=True)
class ClipEncoder:
    """ClipSource -> example dict. Picklable, so Beam workers can run it."""

    short_side: int
    fps: float
    jpeg_quality: int
    flow_function: Callable[[np.ndarray], np.ndarray] | None = None

    def frames(self, source: ClipSource) -> tuple[np.ndarray, float]:
        if source.path is None:
            raise FileNotFoundError(f"{source.video_id}: no video file found")
        frames, source_fps = decode_video(
            source.path, fps=self.fps, start=source.start or 0.0, end=source.end
        )
        return resize_short_side(frames, self.short_side), source_fps

    def __call__(self, source: ClipSource) -> dict:
        frames, source_fps = self.frames(source)
        return self.example(source, frames, source_fps)

    def example(self, source: ClipSource, frames: np.ndarray, source_fps: float | None) -> dict:
        flow = None
        if self.flow_function is not None:
            flow = np.asarray(self.flow_function(frames))
            if flow.shape != frames.shape[:3] + (2,):
                raise ValueError(
                    f"{source.video_id}: flow function gave shape {flow.shape}, "
                    f"expected {frames.shape[:3] + (2,)}"
                )
        return make_example(video_id=source.video_id, label=source.label,
                            label_name=source.label_name, frames=frames, source_fps=source_fps,
                            jpeg_quality=self.jpeg_quality, flow_u8=flow)


def make_example(*, video_id: str, label: int, label_name: str, frames: np.ndarray,
                 source_fps: float | None, jpeg_quality: int,
                 flow_u8: np.ndarray | None = None) -> dict:
    """The stored example (see `video_features`) from uint8 frames and optional uint8 flow."""
    example = {
        "video": encode_jpeg_frames(frames, jpeg_quality),
        "label": label,
        "label_name": label_name,
        "video_id": video_id,
        "fps": np.float32(source_fps or 0.0),
    }
    if flow_u8 is not None:
        example["flow"] = encode_flow_frames(flow_u8)
    return example


# --------------------------------------------------------------------------
# Build reports


def _failure(source, error: BaseException) -> dict:
    path = getattr(source, "path", None)
    kind = "missing" if path is None or not os.path.exists(path) else "undecodable"
    return {"video_id": source.video_id, "path": path, "problem": kind, "error": str(error)}


def write_build_report(directory, *, dataset: str, split: str, num_sources: int,
                       failures: Sequence[dict], final_directory=None) -> Path:
    """Writes `build_report-{split}.json` (atomically) and logs the count."""
    directory = Path(os.fspath(directory))
    failures = sorted(failures, key=lambda f: f["video_id"])
    missing = sum(f["problem"] == "missing" for f in failures)
    report = {
        "dataset": dataset,
        "split": split,
        "clips_listed": num_sources,
        "clips_written": num_sources - len(failures),
        "missing": missing,
        "undecodable": len(failures) - missing,
        "skipped": failures,
    }
    path = directory / f"{REPORT_PREFIX}{split}.json"
    write_atomically(path, lambda f: f.write(json.dumps(report, indent=1).encode()))
    shown = Path(os.fspath(final_directory)) / path.name if final_directory else path
    if failures:
        log.warning("%s %s: skipped %d of %d clips (%d missing, %d undecodable); see %s",
                    dataset, split, len(failures), num_sources, missing,
                    len(failures) - missing, shown)
    else:
        log.info("%s %s: all %d clips written; report %s", dataset, split, num_sources, shown)
    return path


def read_build_report(data_dir, split: str) -> dict:
    """The report `write_build_report` left in a prepared dataset's folder."""
    return json.loads((Path(os.fspath(data_dir)) / f"{REPORT_PREFIX}{split}.json").read_text())


def _encode_or_skip(source, encoder):
    try:
        return source.video_id, encoder(source), None
    except (VideoDecodeError, FileNotFoundError) as e:
        return source.video_id, None, _failure(source, e)


# --------------------------------------------------------------------------
# The builder


class VideoDatasetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the video builders: subclasses list their clips per split.

    Subclasses set BUILDER_CONFIGS (of `VideoBuilderConfig`), VERSION,
    `_info` (via `self.video_info(...)`), and `_split_generators` returning
    `{split: self._generate_examples(sources=[ClipSource, ...], split=...)}`.
    """

    builder_config: VideoBuilderConfig

    # The builder's own file and folder (builders/NAME/), where its README.md and
    # CITATIONS.bib are. TFDS 4.9.10 derives both from the top-level package,
    # which names no real file for a module that `tfds build data/NAME` loads
    # by path, and on Python >= 3.9 needs importlib_resources, which it does
    # not install. A class may name its folder (`data/NAME/`'s do).
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(inspect.getfile(cls))

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "pkg_dir_path" not in cls.__dict__:
            cls.pkg_dir_path = epath.Path(inspect.getfile(cls)).parent

    def __init__(self, **kwargs):
        hide_gpus_from_tf()  # TV-L1 flow runs in JAX, in this process
        super().__init__(**kwargs)
        # The build writes into a temporary folder renamed at the end; the
        # report names the final one.
        self._final_data_dir = self.data_dir
        self._use_beam = False

    # uint8 [T, H, W, 2] flow for uint8 frames [T, H, W, 3]. A module-level
    # function, so that Beam workers can unpickle it; tests swap in another.
    flow_function = staticmethod(tvl1_flow_uint8)

    def video_info(self, *, description: str | None = None, homepage: str | None = None,
                   frame_shape=(None, None)) -> tfds.core.DatasetInfo:
        config = self.builder_config
        return self.dataset_info_from_configs(
            description=description,
            features=video_features(with_flow=config.with_flow, frame_shape=frame_shape,
                                    doc_fps=config.fps),
            supervised_keys=("video", "label"),
            homepage=homepage,
        )

    def set_label_names(self, names: Sequence[str]) -> None:
        names = list(names)
        expected = self.builder_config.expected_num_classes
        if expected is not None and len(names) != expected:
            log.warning("%s: the annotations name %d classes; the official release has %d",
                        self.info.full_name, len(names), expected)
        self.info.features["label"].names = names

    def clip_encoder(self) -> Callable:
        """A picklable callable: one of the sources given to `_generate_examples` -> example."""
        config = self.builder_config
        return ClipEncoder(
            short_side=config.short_side,
            fps=config.fps,
            jpeg_quality=config.jpeg_quality,
            flow_function=self.flow_function if config.with_flow else None,
        )

    def _generate_splits(self, dl_manager, download_config):
        self._use_beam = (download_config.beam_runner is not None
                          or download_config.beam_options is not None)
        return super()._generate_splits(dl_manager, download_config)

    def _generate_examples(self, sources: Sequence, split: str):
        """Examples of `sources` (each with a `video_id`) through `self.clip_encoder()`."""
        sources = _unique(sources, self.info.full_name, split)
        encoder = self.clip_encoder()
        report = dict(directory=os.fspath(self.data_dir), dataset=self.info.full_name,
                      split=split, num_sources=len(sources),
                      final_directory=os.fspath(self._final_data_dir))
        if self._use_beam:
            return beam_encode_clips(sources, encoder, report)
        return _generate_in_process(sources, encoder, report)


def _unique(sources: Sequence, dataset: str, split: str) -> list:
    seen, unique = set(), []
    for source in sources:
        if source.video_id not in seen:
            seen.add(source.video_id)
            unique.append(source)
    if len(unique) != len(sources):
        log.warning("%s %s: %d duplicate annotation rows ignored",
                    dataset, split, len(sources) - len(unique))
    return unique


def build_workers() -> int:
    """Threads encoding clips: $I3D_JAX_BUILD_WORKERS, else one per CPU (up to 8).

    Threads, not processes: decoding (PyAV), resizing and JPEG coding (PIL)
    and numpy release the GIL, and threads need no picklable state or
    `if __name__ == "__main__"` guard in the caller's script.
    """
    if os.environ.get("I3D_JAX_BUILD_WORKERS"):
        return max(1, int(os.environ["I3D_JAX_BUILD_WORKERS"]))
    return max(1, min(os.cpu_count() or 1, 8))


def ordered_map(function, items, workers: int):
    """`map` on a thread pool, in order, with at most 2 x workers items in flight."""
    if workers <= 1:
        yield from map(function, items)
        return
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _generate_in_process(sources, encoder, report) -> Iterator[tuple[str, dict]]:
    failures = []
    try:
        results = ordered_map(lambda source: _encode_or_skip(source, encoder), sources,
                              build_workers())
        for source, (key, example, failure) in zip(sources, results):
            if failure is not None:
                log.info("skipping %s: %s", source.video_id, failure["error"])
                failures.append(failure)
            else:
                yield key, example
    finally:
        write_build_report(failures=failures, **report)


def beam_encode_clips(sources: Sequence, encoder: Callable, report: dict):
    """A Beam PTransform: PBegin -> (key, example), writing the build report on the side."""
    try:
        import apache_beam as beam
    except ImportError:
        raise ImportError(
            "building with a Beam runner needs apache-beam (pip install apache-beam); "
            "leave the Beam options out to build in this process"
        ) from None

    def encode(source):
        key, example, failure = _encode_or_skip(source, encoder)
        if failure is not None:
            yield beam.pvalue.TaggedOutput("failures", failure)
        else:
            yield key, example

    def write_report(failures):
        write_build_report(failures=failures, **report)

    @beam.ptransform_fn
    def EncodeClips(root):  # noqa: N802 (Beam labels read like class names)
        results = (
            root
            | "ListClips" >> beam.Create(list(sources))
            | "Reshuffle" >> beam.Reshuffle()
            | "Encode" >> beam.FlatMap(encode).with_outputs("failures", main="examples")
        )
        _ = (
            results.failures
            | "CollectFailures" >> beam.combiners.ToList()
            | "WriteReport" >> beam.Map(write_report)
        )
        return results.examples

    return EncodeClips()  # pylint: disable=no-value-for-parameter
