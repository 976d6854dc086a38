"""A pickle reader for CIFAR batches that can build numpy arrays and nothing else.

Pickle runs whatever callable a file names; CIFAR batches need only numpy's array
reconstruction, so every other global is refused before it is looked up.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from distnet.data.errors import DataError

# Taken from numpy's own reduce output so the names match this numpy version without
# importing the deprecated `numpy.core` alias.
_RECONSTRUCT = np.ndarray((0,), np.uint8).__reduce__()[0]
_SCALAR = np.uint8(0).__reduce__()[0]

# Python 2 pickles (the official tarball) name `numpy.core`; numpy 2 writes `numpy._core`.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class ForbiddenGlobalError(DataError):
    """A pickle asked for a callable outside ALLOWED_GLOBALS."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, source: str):
        # encoding="bytes" keeps Python 2 str keys as bytes, as the CIFAR docs expect.
        super().__init__(io.BytesIO(data), encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenGlobalError(
                f"{self.source}: pickle asks for forbidden global {module}.{name} "
                "(only numpy array reconstruction is allowed)"
            ) from None

    def persistent_load(self, pid):
        raise ForbiddenGlobalError(f"{self.source}: pickle uses a persistent id, refused")


def restricted_loads(data: bytes, source: str) -> object:
    """Unpickle `data` allowing only numpy arrays; `source` names it in errors."""
    try:
        return _NumpyOnlyUnpickler(data, source).load()
    except DataError:
        raise
    except Exception as err:  # a malformed pickle can raise almost any type
        raise DataError(f"{source}: not a valid pickle ({type(err).__name__}: {err})") from err
