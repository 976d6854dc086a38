"""Which samples a worker uses at each step: pure functions of (seed, epoch, step, worker).

Nothing here keeps state, so a restarted worker recomputes exactly what the dead one would
have, and a resumed run continues exactly where its checkpoint left off.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# Distinct streams for distinct purposes, so that e.g. the shuffle and the dropout mask of
# the same (epoch, step, worker) are independent.
_SHUFFLE, _DROPOUT, _AUGMENT, _EVAL = 1, 2, 3, 4


def split_batch(batch_size: int, num_workers: int) -> list[int]:
    """Per-worker share of a global batch; the first `batch_size % num_workers` get one more.

    >>> split_batch(10, 4)
    [3, 3, 2, 2]
    """
    base, extra = divmod(batch_size, num_workers)
    return [base + (i < extra) for i in range(num_workers)]


def steps_per_epoch(rows_per_worker: list[int], batch_sizes: list[int]) -> int:
    """Steps in one epoch: each worker walks through its own shuffled rows once, and the
    epoch ends when the first of them runs out (so every step uses full per-worker batches)."""
    return max(1, min(rows // b for rows, b in zip(rows_per_worker, batch_sizes, strict=True)))


def _rng(seed: int, purpose: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, purpose, *keys])


@lru_cache(maxsize=4)  # every step of an epoch reads it; shuffling 25k rows takes ~0.5 ms
def epoch_permutation(seed: int, epoch: int, worker: int, num_rows: int) -> np.ndarray:
    """The order in which `worker` visits its local rows during `epoch` (read-only: it is
    shared by every call with the same arguments)."""
    perm = _rng(seed, _SHUFFLE, epoch, worker).permutation(num_rows)
    perm.flags.writeable = False
    return perm


def batch_indices(
    seed: int, epoch: int, step_in_epoch: int, worker: int, num_rows: int, batch: int
) -> np.ndarray:
    """Local row numbers of `worker`'s minibatch at `step_in_epoch` of `epoch`.

    If a worker has fewer rows than steps * batch (uneven shards), it wraps around its
    permutation rather than shrinking the batch, so the sample weighting stays fixed.
    """
    perm = epoch_permutation(seed, epoch, worker, num_rows)
    start = step_in_epoch * batch
    return perm[np.arange(start, start + batch) % num_rows]


def dropout_seed(seed: int, epoch: int, step_in_epoch: int, worker: int) -> int:
    """Seed for the dropout masks of one worker step."""
    return int(_rng(seed, _DROPOUT, epoch, step_in_epoch, worker).integers(2**31 - 1))


def augment_rng(seed: int, epoch: int, step_in_epoch: int, worker: int) -> np.random.Generator:
    """Generator for data augmentation of one worker step."""
    return _rng(seed, _AUGMENT, epoch, step_in_epoch, worker)


def eval_subsample(seed: int, epoch: int, worker: int, num_rows: int, count: int) -> np.ndarray:
    """A fixed-size random subset of a worker's rows, for the train-accuracy estimate."""
    count = min(count, num_rows)
    return np.sort(_rng(seed, _EVAL, epoch, worker).choice(num_rows, count, replace=False))
