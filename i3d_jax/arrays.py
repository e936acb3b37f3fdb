"""Array files (.npy, .npz) read without pickles, with errors naming the file.

`allow_pickle=False` everywhere: an array file is data, and a pickle in one
could run code when loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _exists(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")


def load_array(path, mmap: bool = False) -> np.ndarray:
    """The array in an .npy file; memory-mapped read-only with `mmap` (for
    sets of videos larger than memory). FileNotFoundError or ValueError,
    naming the file, where it is absent or not an .npy array."""
    path = Path(path)
    _exists(path)
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as e:
        raise ValueError(f"{path}: not a readable .npy array ({type(e).__name__}: {e})") from None
    if not isinstance(array, np.ndarray):
        array.close()  # an .npz archive under another name
        raise ValueError(f"{path}: an .npz archive of several arrays, not an .npy array")
    return array


def npz_keys(path) -> list[str]:
    """The names of the arrays in an .npz, without reading them."""
    path = Path(path)
    _exists(path)
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise ValueError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None
    if isinstance(data, np.ndarray):
        raise ValueError(f"{path}: an .npy array, not an .npz archive")
    with data:
        return list(data.files)


def load_npz(path, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """{name: array} of an .npz: every array, or only `keys` (a ValueError
    names the missing ones and those present)."""
    path = Path(path)
    present = npz_keys(path)
    wanted = present if keys is None else list(keys)
    missing = [k for k in wanted if k not in present]
    if missing:
        raise ValueError(
            f"{path}: no array named {', '.join(missing)} "
            f"(arrays present: {', '.join(present) or 'none'})"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in wanted}
    except Exception as e:
        raise ValueError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None


class NpzRows:
    """An array of an .npz read one row (first index) at a time: its shape and
    dtype from the member's header, then rows in order, so an archive of
    thousands of videos needs the memory of one (stored or deflated members
    alike; object arrays refused)."""

    def __init__(self, path, key: str):
        import zipfile

        self.path, self.key = Path(path), key
        if key not in npz_keys(self.path):
            raise ValueError(f"{self.path}: no array named {key}")
        with zipfile.ZipFile(self.path) as archive, archive.open(f"{key}.npy") as member:
            self.shape, self._fortran, self.dtype = self._header(member)
        if self.dtype.hasobject:
            raise ValueError(f"{self.path}: array {key} holds Python objects, not numbers")
        if self._fortran and len(self.shape) > 1:
            raise ValueError(f"{self.path}: array {key} is stored in Fortran order; "
                             "rows cannot be read one at a time")

    def _header(self, member):
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(member)
        return np.lib.format.read_array_header_2_0(member)

    def __len__(self) -> int:
        return self.shape[0]

    def __iter__(self):
        import zipfile

        row_shape = self.shape[1:]
        row_bytes = int(np.prod(row_shape, dtype=np.int64)) * self.dtype.itemsize
        with zipfile.ZipFile(self.path) as archive, \
                archive.open(f"{self.key}.npy") as member:
            self._header(member)
            for index in range(self.shape[0]):
                data = member.read(row_bytes)
                if len(data) != row_bytes:
                    raise ValueError(f"{self.path}: array {self.key} ends at row {index} of "
                                     f"{self.shape[0]}")
                yield np.frombuffer(data, self.dtype).reshape(row_shape)
