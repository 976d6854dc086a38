"""cs231n/vis_utils.py: visualize_grid, to look at first-layer filters."""

from __future__ import annotations

import math

import numpy as np

from distnet.errors import InvalidInput


def visualize_grid(Xs, ubound=255.0, padding=1):
    """Tile N images Xs (N, H, W, C) row by row into a ceil(sqrt(N))-wide square grid,
    `padding` zero pixels apart, each image rescaled on its own to [0, ubound] (a constant
    image to 0). Returns a float array (side * (H + padding) - padding, side * (W + padding)
    - padding, C); `plt.imshow(grid.astype('uint8'))` shows it."""
    Xs = np.asarray(Xs, dtype=np.float64)
    if Xs.ndim != 4 or Xs.shape[0] == 0:
        raise InvalidInput(f"visualize_grid takes images (N, H, W, C), got shape {Xs.shape}")
    N, H, W, C = Xs.shape
    side = math.ceil(math.sqrt(N))
    low = Xs.min(axis=(1, 2, 3), keepdims=True)
    span = Xs.max(axis=(1, 2, 3), keepdims=True) - low
    scaled = ubound * (Xs - low) / np.where(span > 0, span, 1)
    grid = np.zeros((side * (H + padding) - padding, side * (W + padding) - padding, C))
    for i, image in enumerate(scaled):
        top, left = (i // side) * (H + padding), (i % side) * (W + padding)
        grid[top : top + H, left : left + W] = image
    return grid
