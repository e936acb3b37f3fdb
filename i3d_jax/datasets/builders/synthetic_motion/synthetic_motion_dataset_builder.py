"""synthetic_motion: generated clips whose class only motion tells (the default training data)."""
from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from i3d_jax.datasets import synthetic_motion
from i3d_jax.datasets.video_builder import VideoBuilderConfig, VideoDatasetBuilder

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class SyntheticMotionConfig(VideoBuilderConfig):
    """Clip size and counts; every clip is a function of (seed, split, index)."""

    seed: int = 0
    num_frames: int = 32
    height: int = 64
    width: int = 64
    num_examples: tuple = (("train", 1024), ("validation", 256), ("test", 256))


class Builder(VideoDatasetBuilder):
    """Generated clips whose class is set by motion; see i3d_jax.datasets.synthetic_motion."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        SyntheticMotionConfig(
            name="default", with_flow=True,
            description="64x64, 32 frames, true flow; 1024 train, 256 validation, 256 test clips",
        ),
        SyntheticMotionConfig(name="rgb", with_flow=False, description="as default, without flow"),
        SyntheticMotionConfig(
            name="short_side_256", with_flow=True, height=256, width=320, num_frames=80,
            num_examples=(("train", 32), ("validation", 8), ("test", 8)),
            description="256x320, 80 frames, a few clips: pipeline benchmarks and full-size tests",
        ),
        SyntheticMotionConfig(
            name="tiny", with_flow=True, height=32, width=32, num_frames=20,
            num_examples=(("train", 32), ("validation", 8), ("test", 16)),
            description="32x32, 20 frames, true flow, a few clips: trainer tests and smoke runs",
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        info = self.video_info(frame_shape=(config.height, config.width))
        info.features["label"].names = list(synthetic_motion.CLASS_NAMES)
        return info

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        counts = dict(self.builder_config.num_examples)
        return {
            split: self._generate_examples(sources=self._clips(split, counts[split]), split=split)
            for split in SPLITS if counts.get(split)
        }

    def _clips(self, split: str, count: int) -> list[synthetic_motion.GeneratedClip]:
        split_index = SPLITS.index(split)
        return [
            synthetic_motion.GeneratedClip(video_id=f"{split}_{index:06d}",
                                           label=synthetic_motion.clip_label(index),
                                           split_index=split_index, index=index)
            for index in range(count)
        ]

    def clip_encoder(self) -> synthetic_motion.ClipRenderer:
        config = self.builder_config
        return synthetic_motion.ClipRenderer(
            seed=config.seed, num_frames=config.num_frames, height=config.height,
            width=config.width, fps=config.fps, jpeg_quality=config.jpeg_quality,
            with_flow=config.with_flow)
