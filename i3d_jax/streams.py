"""The input streams of the paper's networks and the channels each takes."""
from __future__ import annotations

# RGB frames, and TV-L1 flow as (x, y) displacements.
STREAM_CHANNELS = {"rgb": 3, "flow": 2}


def accepted_channels() -> str:
    """'3 (rgb) or 2 (flow)': the counts a stream can have, for messages."""
    return " or ".join(f"{n} ({stream})" for stream, n in STREAM_CHANNELS.items())


def stream_for_channels(channels: int, origin: str) -> str:
    """The stream whose inputs have `channels` channels; a ValueError naming
    `origin` (a file, or what it is about) and the accepted counts otherwise."""
    for stream, count in STREAM_CHANNELS.items():
        if count == channels:
            return stream
    raise ValueError(f"{origin}: {channels} input channels; expected {accepted_channels()}")


def model_inputs(batch, stream_names):
    """One stream's array, or {"rgb", "flow"} for a model fed several."""
    if len(stream_names) == 1:
        return batch[stream_names[0]]
    return {s: batch[s] for s in stream_names}
