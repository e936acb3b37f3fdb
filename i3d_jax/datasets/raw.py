"""Reading the raw releases: finding video files, cutting segments, unpacking archives."""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from i3d_jax.video import VIDEO_SUFFIXES, VideoDecodeError

log = logging.getLogger(__name__)

_DONE_MARKER = ".extracted"


def index_videos(root, suffixes=VIDEO_SUFFIXES) -> dict[str, Path]:
    """{file name: path} of every video under `root` (first found wins, in sorted order)."""
    found: dict[str, Path] = {}
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        for name in sorted(files):
            if name.lower().endswith(suffixes) and name not in found:
                found[name] = Path(directory) / name
    return found


def find_files(root, pattern: str) -> list[Path]:
    return sorted(Path(root).rglob(pattern))


def decode_segment(path, start: float, end: float | None, fps: float = 25.0):
    """Frames [T, H, W, 3] of the segment [start, end) seconds of a video at `fps`.

    Seeks to the key frame before `start` rather than decoding from the
    beginning. Output frame k shows time start + k / fps, taking the last
    source frame shown at or before it (as `decode_video` does from time 0).
    Returns (frames, source_fps).
    """
    import av

    path = Path(path)
    if not path.exists():
        raise VideoDecodeError(f"{path}: no such file")
    if end is not None and end <= start:
        raise VideoDecodeError(f"{path}: empty segment [{start}, {end}) s")
    frames, times = [], []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            source_fps = float(rate) if rate else None
            time_base = stream.time_base
            origin = float(stream.start_time * time_base) if stream.start_time is not None else 0.0
            if start > 0 and time_base:
                container.seek(int((start + origin) / time_base), stream=stream,
                               backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.time is None:
                    raise VideoDecodeError(
                        f"{path}: frames carry no time stamps, cannot cut a segment")
                t = frame.time - origin
                if end is not None and t >= end:
                    break
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(t)
    except VideoDecodeError:
        raise
    except Exception as e:  # av.error.InvalidDataError and friends
        raise VideoDecodeError(f"{path}: cannot decode video ({type(e).__name__}: {e})") from None
    if not frames:
        raise VideoDecodeError(f"{path}: no frames in [{start}, {end}) s")
    times = np.asarray(times, np.float64)
    # Keep the last frame at or before `start` (it is shown at `start`).
    first = max(0, int(np.searchsorted(times, start + 1e-6, side="right")) - 1)
    frames, times = frames[first:], times[first:]
    frame_period = 1.0 / source_fps if source_fps else (
        (times[-1] - times[0]) / max(len(times) - 1, 1))
    shown_until = times[-1] + frame_period
    if end is not None:
        shown_until = min(shown_until, end)
    if shown_until <= start:
        raise VideoDecodeError(f"{path}: the video ends at {times[-1]:.2f} s, before the segment "
                               f"[{start}, {end}) s")
    count = max(1, int(math.floor((shown_until - start) * fps + 1e-6)))
    wanted = start + np.arange(count) / fps
    index = np.clip(np.searchsorted(times, wanted + 1e-6, side="right") - 1, 0, len(frames) - 1)
    return np.stack(frames)[index], source_fps


def _safe_member(name: str) -> PurePosixPath:
    member = PurePosixPath(name.replace("\\", "/"))
    if member.is_absolute() or ".." in member.parts:
        raise ValueError(f"archive member {name!r} points outside the extraction folder")
    return member


def extract_archive(archive, destination) -> Path:
    """Unpacks a .zip, .rar or .tar archive into `destination` (once) and returns it.

    Extraction goes to a temporary sibling renamed on success, so an
    interrupted run never leaves a half-written folder that looks complete.
    RAR needs libarchive-c (`pip install libarchive-c`) and the system's
    libarchive; zip uses Python's zipfile.
    """
    archive, destination = Path(archive), Path(destination)
    if (destination / _DONE_MARKER).exists():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=destination.name + ".partial-"))
    try:
        log.info("extracting %s into %s", archive, destination)
        if archive.suffix.lower() == ".zip":
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _safe_member(info.filename)
                zf.extractall(staging)
        else:
            _extract_with_libarchive(archive, staging)
        (staging / _DONE_MARKER).write_text(str(archive))
        if destination.exists():
            shutil.rmtree(destination)
        os.replace(staging, destination)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return destination


def _extract_with_libarchive(archive: Path, target: Path) -> None:
    try:
        import libarchive
    except (ImportError, OSError) as e:  # OSError: the system's libarchive is missing
        raise RuntimeError(
            f"{archive}: reading {archive.suffix} archives needs libarchive-c and the system "
            f"libarchive ({type(e).__name__}: {e}). Install them (pip install libarchive-c; "
            "apt-get install libarchive13), or extract the archive yourself "
            f"(unrar x / 7z x / bsdtar -xf {archive.name}) into the manual folder."
        ) from None
    try:
        with libarchive.file_reader(str(archive)) as entries:
            for entry in entries:
                member = _safe_member(entry.pathname)
                out = target / member
                if entry.isdir:
                    out.mkdir(parents=True, exist_ok=True)
                elif entry.isfile:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with open(out, "wb") as f:
                        for block in entry.get_blocks():
                            f.write(block)
    except libarchive.ArchiveError as e:
        raise RuntimeError(f"{archive}: cannot read the archive ({e})") from None


def extract_nested_archives(root, suffix: str = ".rar") -> None:
    """Unpacks archives inside an extracted folder beside themselves (HMDB-51's per-class RARs)."""
    for inner in find_files(root, f"*{suffix}"):
        extract_archive(inner, inner.with_suffix(""))
