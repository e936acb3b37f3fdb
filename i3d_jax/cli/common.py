"""What several commands share: label files and the stream option."""
from __future__ import annotations

from i3d_jax.streams import STREAM_CHANNELS

STREAMS = tuple(STREAM_CHANNELS)


def read_labels(path) -> list[str]:
    """Class names, one a line (blank lines skipped), in output order."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]
