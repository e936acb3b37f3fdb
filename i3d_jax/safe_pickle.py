"""Unpickling of untrusted files that admits NumPy arrays and nothing else."""
from __future__ import annotations

import io
import pickle

# Exactly what a pickle of plain containers of NumPy arrays needs. Anything
# else (os.system, builtins.eval, a class's __reduce__) is refused.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class UnsafePickleError(pickle.UnpicklingError):
    pass


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: only NumPy arrays are allowed"
            )
        return super().find_class(module, name)


def load_arrays_pickle(data: bytes, source: str = "<bytes>"):
    """Unpickles `data`, admitting NumPy arrays inside dicts, lists and tuples."""
    try:
        return _ArraysOnlyUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{source}: {e}") from None
    except Exception as e:  # truncated or not a pickle at all
        raise pickle.UnpicklingError(f"{source}: not a readable pickle ({e})") from e
