"""Gradient compression between workers and parameter servers: pure numpy codecs.

`[train] compression` chooses what a worker sends for each gradient slice:

- "none": the slice as it is (no copy).
- "fp16": the slice as float16, half the bytes of float32; the server upcasts it.
- "topk": the k = ceil(topk_ratio * size) entries of largest magnitude, as int32 indices
  and float32 values, with error feedback: what a worker does not send it keeps as a
  residual and adds to its next gradient, so small entries are delayed, not dropped
  (Seide et al. 2014; Stich et al., "Sparsified SGD with Memory", 2018).

The residual is state of the worker process: a restarted worker starts again from zero
and what the dead one held is lost. With "topk" a synchronous run with worker restarts is
therefore no longer identical to one without; "none" and "fp16" keep that guarantee.

    encoder = Encoder("topk", ratio=0.01)
    payload = encoder.encode(0, grad_slice)        # on the worker, slice 0
    dense = decode(payload, np.float32)            # on the server
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sparse:
    """The entries of a `size`-element vector that were sent; the others are zero."""

    indices: np.ndarray  # int32, ascending
    values: np.ndarray  # float32
    size: int

    @property
    def nbytes(self) -> int:
        return self.indices.nbytes + self.values.nbytes


Payload = np.ndarray | Sparse


def topk_count(size: int, ratio: float) -> int:
    """How many entries of a `size`-element slice "topk" sends (at least one)."""
    return min(size, max(1, math.ceil(ratio * size)))


class Encoder:
    """Encodes one worker's gradient slices; keeps the top-k residual of each slice."""

    def __init__(self, kind: str = "none", ratio: float = 0.01):
        if kind not in ("none", "fp16", "topk"):
            raise ValueError(f"unknown compression {kind!r}")
        self.kind, self.ratio = kind, ratio
        self.residuals: dict[int, np.ndarray] = {}  # slice number -> what was not sent yet

    def encode(self, slot: int, grad: np.ndarray) -> Payload:
        """What to send for gradient slice number `slot` (the slices a server owns)."""
        if self.kind == "none":
            return grad
        if self.kind == "fp16":
            return grad.astype(np.float16)
        residual = self.residuals.get(slot)
        acc = grad + residual if residual is not None else grad.copy()
        k = topk_count(acc.size, self.ratio)
        indices = np.sort(np.argpartition(np.abs(acc), acc.size - k)[acc.size - k :])
        values = acc[indices].astype(np.float32)
        acc[indices] -= values  # the residual keeps even the float32 rounding error
        self.residuals[slot] = acc
        return Sparse(indices.astype(np.int32), values, acc.size)


def decode(payload: Payload, dtype) -> np.ndarray:
    """The dense gradient slice in `dtype` (the payload itself when nothing was encoded)."""
    if isinstance(payload, Sparse):
        dense = np.zeros(payload.size, dtype)
        dense[payload.indices] = payload.values
        return dense
    return payload if payload.dtype == dtype else payload.astype(dtype)


def nbytes(payload: Payload) -> int:
    """Bytes of gradient data the payload puts on the wire."""
    return int(payload.nbytes)
