"""Output files that appear whole or not at all."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | Path):
    """Yields a temporary path beside `path` (same suffix, so writers that go
    by extension work) and renames it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private; give it the permissions a plain open would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomically(path: str | Path, write) -> None:
    """Calls write(binary_file) on a temporary file, then renames it to `path`."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        write(f)
