"""Reading the raw releases: finding video files, cutting segments, unpacking archives."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath


from i3d_jax.video import VIDEO_SUFFIXES

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
