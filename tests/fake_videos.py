"""Tiny videos and annotation files in the official layouts, for builder tests."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


LEVELS = 20  # distinct grey levels; frame i shows level i mod LEVELS


def frame_level(index: int) -> int:
    """The grey level of source frame `index` in `write_video` clips."""
    return 16 + 12 * (index % LEVELS)


def write_video(path, num_frames: int = 12, fps: float = 25, width: int = 64, height: int = 48,
                first_level: int = 0) -> Path:
    """An MPEG-4 clip whose frame i is flat grey `frame_level(first_level + i)`.

    Flat frames survive compression, so decoded frames name their source frame."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=int(fps) if float(fps).is_integer() else fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"qscale": "1"}
        for i in range(num_frames):
            level = frame_level(first_level + i)
            image = np.full((height, width, 3), level, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decoded_levels(frames: np.ndarray) -> np.ndarray:
    """The source frame index (mod LEVELS) each decoded flat grey frame shows."""
    means = frames.reshape(len(frames), -1).mean(axis=1)
    return np.round((means - 16) / 12).astype(int)


def write_corrupt_video(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 8)
    return path


def write_stored_rar(path, files: dict[str, bytes]) -> Path:
    """A RAR 4 archive storing `files` uncompressed (nothing here can write RAR otherwise).

    Blocks: marker, archive header, one file header (+ data) per file, end.
    Each header starts with the low 16 bits of the CRC-32 of the rest of it.
    """
    def block(head_type: int, flags: int, body: bytes) -> bytes:
        header = struct.pack("<BHH", head_type, flags, 7 + len(body)) + body
        return struct.pack("<H", zlib.crc32(header) & 0xFFFF) + header

    out = [b"Rar!\x1a\x07\x00", block(0x73, 0, b"\x00" * 6)]
    for name, data in files.items():
        encoded = name.encode()
        # packed size, unpacked size, host OS (3: Unix), CRC, DOS time, version 2.0,
        # method 0x30 (store), name length, attributes; flag 0x8000: sizes follow.
        body = struct.pack("<IIBIIBBHI", len(data), len(data), 3, zlib.crc32(data) & 0xFFFFFFFF,
                           (45 << 25) | (1 << 21) | (1 << 16), 20, 0x30, len(encoded), 0o100644)
        out.append(block(0x74, 0x8000, body + encoded) + data)
    out.append(block(0x7B, 0x4000, b""))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(out))
    return path
