"""Flat parameters: one contiguous 1-D buffer with a named, shaped view per parameter.

Averaging, sending, updating and checkpointing a whole network is then one array each,
and a parameter-server shard is a slice of `.vector`. Assignment code keeps working:
`params['W1'] = new_w` copies into the view, so the view and the buffer stay shared.

    >>> p = FlatParams({"W1": (2, 3), "b1": (3,)}, np.float32)
    >>> p["W1"] = np.ones((2, 3)); p["b1"][:] = 2
    >>> p.vector
    array([1., 1., 1., 1., 1., 1., 2., 2., 2.], dtype=float32)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, MutableMapping
from typing import NamedTuple

import numpy as np


class Slot(NamedTuple):
    """Where one parameter lives in the flat vector."""

    name: str
    shape: tuple[int, ...]
    offset: int
    size: int


class FlatParams(MutableMapping):
    """Named views into one contiguous buffer; the set of names and shapes is fixed."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], dtype=np.float32):
        slots, offset = [], 0
        for name, shape in shapes.items():
            shape = tuple(int(d) for d in shape)
            if any(d < 0 for d in shape):
                raise ValueError(f"parameter {name!r} has a negative dimension: {shape}")
            size = math.prod(shape)
            slots.append(Slot(str(name), shape, offset, size))
            offset += size
        self._layout = tuple(slots)
        self._bind(np.zeros(offset, dtype=np.dtype(dtype)))

    def _bind(self, vector: np.ndarray) -> None:
        self._vector = vector
        self._views = {
            s.name: vector[s.offset : s.offset + s.size].reshape(s.shape) for s in self._layout
        }

    @classmethod
    def _with_layout(cls, layout: tuple[Slot, ...], vector: np.ndarray) -> FlatParams:
        flat = cls.__new__(cls)
        flat._layout = layout
        flat._bind(vector)
        return flat

    # --- the whole vector -------------------------------------------------------------

    @property
    def vector(self) -> np.ndarray:
        """The flat buffer itself (not a copy): writing to it changes every view."""
        return self._vector

    @property
    def dtype(self) -> np.dtype:
        return self._vector.dtype

    @property
    def layout(self) -> tuple[Slot, ...]:
        """(name, shape, offset, size) for each parameter, in vector order."""
        return self._layout

    def _check_vector(self, vector) -> np.ndarray:
        vector = np.asarray(vector)
        if vector.dtype != self.dtype:
            raise ValueError(f"parameter vector has dtype {vector.dtype}, expected {self.dtype}")
        if vector.shape != self._vector.shape:
            raise ValueError(
                f"parameter vector has shape {vector.shape}, expected {self._vector.shape}"
            )
        return vector

    def set_vector(self, vector) -> None:
        """Copy a whole flat vector in (same length and dtype)."""
        np.copyto(self._vector, self._check_vector(vector))

    def with_vector(self, vector) -> FlatParams:
        """The same layout over `vector` itself, without copying (it may be read-only)."""
        return self._with_layout(self._layout, self._check_vector(vector))

    def zeros_like(self) -> FlatParams:
        return self._with_layout(self._layout, np.zeros_like(self._vector))

    def empty_like(self) -> FlatParams:
        """Uninitialised buffer, for callers that overwrite every parameter."""
        return self._with_layout(self._layout, np.empty_like(self._vector))

    def copy(self) -> FlatParams:
        return self._with_layout(self._layout, self._vector.copy())

    def same_layout(self, other: FlatParams) -> bool:
        return self._layout == other._layout and self.dtype == other.dtype

    # --- mapping protocol -------------------------------------------------------------

    def __getitem__(self, name: str) -> np.ndarray:
        return self._views[name]

    def __setitem__(self, name: str, value) -> None:
        view = self._views.get(name)
        if view is None:
            raise KeyError(f"unknown parameter {name!r}: the layout is fixed ({', '.join(self)})")
        if value is view:  # an in-place update rule handed the view back
            return
        value = np.asarray(value)
        if value.shape != view.shape:
            raise ValueError(f"parameter {name!r} has shape {view.shape}, got {value.shape}")
        np.copyto(view, value, casting="same_kind")

    def __delitem__(self, name: str) -> None:
        raise TypeError(f"cannot delete parameter {name!r}: the layout of FlatParams is fixed")

    def __iter__(self) -> Iterator[str]:
        return (s.name for s in self._layout)

    def __len__(self) -> int:
        return len(self._layout)

    def __contains__(self, name) -> bool:
        return name in self._views

    def __reduce__(self):
        # Pickle (Ray, deepcopy) the buffer once and rebuild the views, so they stay views.
        return (FlatParams._with_layout, (self._layout, self._vector))

    def __repr__(self) -> str:
        inner = ", ".join(f"{s.name}: {s.shape}" for s in self._layout)
        return f"FlatParams({{{inner}}}, dtype={self.dtype}, size={self._vector.size})"
