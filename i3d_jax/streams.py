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


def network_range(frames):
    """uint8 frames as the input pipeline hands them over (0..255; flow quantised,
    its x already negated on a flip) -> float32 in [-1, 1], x * 2 / 255 - 1; anything
    else (float clips, abstract shapes) as it is. Called inside the jitted steps, so
    the host copies a quarter of the bytes and the device does the arithmetic."""
    if getattr(frames, "dtype", None) != "uint8":
        return frames
    import jax.numpy as jnp

    return frames.astype(jnp.float32) * (2.0 / 255.0) - 1.0


def mirrored(frames, flip, stream):
    """Clips [B, T, H, W, C] in [-1, 1] mirrored left to right where `flip` [B] is
    set, a flow's x negated with them: the flip the input pipeline leaves to the
    device (`ClipOptions.flip_on_device`)."""
    import jax.numpy as jnp

    flip = flip.reshape(-1, *([1] * (frames.ndim - 1)))
    out = jnp.where(flip, frames[:, :, :, ::-1], frames)
    if stream == "flow":
        out = out * jnp.where(flip, jnp.array([-1.0, 1.0], out.dtype), 1.0)
    return out


def model_inputs(batch, stream_names):
    """One stream's array, or {"rgb", "flow"} for a model fed several, in [-1, 1];
    mirrored where the batch's `flip` says."""
    def stream(s):
        frames = network_range(batch[s])
        return frames if "flip" not in batch else mirrored(frames, batch["flip"], s)

    if len(stream_names) == 1:
        return stream(stream_names[0])
    return {s: stream(s) for s in stream_names}
