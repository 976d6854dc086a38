"""CIFAR-10 as in-memory numpy arrays: the CS231n assignment's data dict for the Solver.

    data = load_cifar10()          # prepares ~/.cache/distnet/cifar10 on first use
    solver = Solver(model, data, ...)

X_train/X_val/X_test are float32 (N, 3, 32, 32) with the training split's per-pixel mean
subtracted (the assignment's get_CIFAR10_data), y_* int64 labels; 49,000 / 1,000 / 10,000
images with the default preparation.
"""

from __future__ import annotations

import numpy as np

from distnet.data.prepare import default_out, ensure_dataset
from distnet.data.reader import open_split

SPLITS = ("train", "val", "test")


def load_cifar10(
    path: str | None = None,
    *,
    source: str | None = None,
    md5: str | None = None,
    subtract_mean: bool = True,
) -> dict[str, np.ndarray]:
    """The dataset at `path` (a directory or pyarrow URI; default: distnet's cache),
    prepared there first from `source` (file or URL; default: the official download) if
    it holds none. Without `subtract_mean` X_* are the raw pixel values as float32."""
    path = path or default_out()
    ensure_dataset(path, source=source, md5=md5)
    data = {}
    for split in SPLITS:
        reader = open_split(path, split)
        images, labels = reader.take(np.arange(reader.num_rows))
        X = reader.normalize(images) if subtract_mean else images.astype(np.float32)
        data[f"X_{split}"], data[f"y_{split}"] = X.reshape(-1, 3, 32, 32), labels
    return data
