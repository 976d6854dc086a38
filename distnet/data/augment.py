"""Data augmentation on uint8 CIFAR minibatches, before the float conversion.

Images are rows of 3072 bytes in CIFAR order: the R plane, then G, then B, each 32x32
row-major, as (B, 3072) or, the same bytes seen as images, (B, 3, 32, 32) (the data
reader's "nchw" layout); each function returns the layout it is given. Every function
returns a new array and never writes to its input, which is usually a read-only
memory-mapped view of an Arrow shard.

Randomness comes only from the `np.random.Generator` the caller passes in, derived from
(seed, epoch, step, worker), so a restarted worker augments exactly as the dead one would
have. `augment` draws the crop offsets first, then the flips.

    >>> rng = np.random.default_rng(0)
    >>> batch = np.zeros((4, 3072), dtype=np.uint8)
    >>> augment(batch, rng, flip=True, crop_padding=4).shape
    (4, 3072)
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from distnet.errors import DistnetError

CHANNELS, SIZE = 3, 32
PIXELS = CHANNELS * SIZE * SIZE


class AugmentError(DistnetError, ValueError):
    """Images of the wrong shape or dtype, or a bad augmentation setting."""


def augment(
    images: np.ndarray, rng: np.random.Generator, flip: bool, crop_padding: int
) -> np.ndarray:
    """Random crop with `crop_padding` (0 = none), then random horizontal flip if `flip`."""
    _planes(images)  # check the input even when everything is switched off
    out = images
    if crop_padding != 0:
        out = random_crop(out, rng, crop_padding)
    if flip:
        out = random_flip(out, rng)
    return images.copy() if out is images else out


def random_flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirror each image left-right with probability 1/2; uint8 (B, 3072) or
    (B, 3, 32, 32) -> the same shape."""
    planes = _planes(images)
    flipped = rng.random(len(planes)) < 0.5
    out = planes.copy()
    out[flipped] = out[flipped, ..., ::-1]  # the right side is a copy, so no aliasing
    return out.reshape(images.shape)


def random_crop(images: np.ndarray, rng: np.random.Generator, padding: int) -> np.ndarray:
    """Zero-pad each image by `padding` pixels per side and cut a random 32x32 window.

    Each image gets its own offsets (dy, dx), uniform in [0, 2 * padding]; (0, 0) is the
    top-left window, (padding, padding) the original image. uint8 (B, 3072) or
    (B, 3, 32, 32) -> the same shape.
    """
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)):
        raise AugmentError(f"crop padding must be an integer, got {padding!r}")
    if not 0 <= padding < SIZE:
        # 32 or more could crop an image away entirely.
        raise AugmentError(f"crop padding must be in [0, {SIZE - 1}], got {padding}")
    planes = _planes(images)
    batch = len(planes)
    offsets = rng.integers(0, 2 * padding + 1, size=(2, batch))
    padded = np.zeros((batch, CHANNELS, SIZE + 2 * padding, SIZE + 2 * padding), np.uint8)
    padded[:, :, padding : padding + SIZE, padding : padding + SIZE] = planes
    # windows[b, c, dy, dx] is the 32x32 crop at (dy, dx): a view, nothing is copied yet.
    windows = sliding_window_view(padded, (SIZE, SIZE), axis=(2, 3))
    out = windows[np.arange(batch), :, offsets[0], offsets[1]]  # (B, 3, 32, 32), a copy
    return out.reshape(images.shape)


def _planes(images: np.ndarray) -> np.ndarray:
    """(B, 3072) or (B, 3, 32, 32) uint8 -> a (B, 3, 32, 32) view, after checking what we
    were given."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        kind = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
        raise AugmentError(f"images must be a uint8 numpy array, got {kind}")
    if images.shape[1:] not in ((PIXELS,), (CHANNELS, SIZE, SIZE)):
        raise AugmentError(
            f"images must have shape (B, {PIXELS}) or "
            f"(B, {CHANNELS}, {SIZE}, {SIZE}), got {images.shape}"
        )
    return images.reshape(-1, CHANNELS, SIZE, SIZE)
