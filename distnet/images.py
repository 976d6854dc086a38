"""Files to predict on, as rows the models take: PNG/JPEG images and .npy batches.

A row is a CIFAR-10 image as the dataset stores it: the R, G and B planes of a 32x32
picture, 3,072 values. Pictures of another size are center-cropped to a square and
resized to 32x32. A .npy batch holds uint8 pixels, (N, 3072), (N, 3, 32, 32) or
(N, 32, 32, 3) (one image without the N works too), or float rows that are already model
inputs, such as `distnet.data.load_cifar10()["X_test"]` saved with np.save.

    rows = read_inputs(["cat.png", "batch.npy"])
    rows[0].name, rows[0].values, rows[0].raw   # "cat.png", (3072,) uint8, True

PNG and JPEG decoding is Pillow's (the `images` extra); .npy needs nothing more and is
read without pickle.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distnet.errors import DistnetError

SIDE, CHANNELS = 32, 3
ROW = CHANNELS * SIDE * SIDE
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImageError(DistnetError):
    """A file to predict on is missing, of an unknown kind, or unreadable."""


@dataclass(frozen=True)
class InputRow:
    name: str  # the file, with [i] for a row of a .npy batch
    values: np.ndarray  # (3072,)
    raw: bool  # uint8 pixels (the training mean is still to be subtracted)


def read_inputs(paths: list[str | os.PathLike]) -> list[InputRow]:
    """Every row of every file, in order."""
    rows: list[InputRow] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise ImageError(f"{path}: no such file")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            batch = _read_npy(path)
            raw = batch.dtype == np.uint8
            rows += [InputRow(f"{path}[{i}]", row, raw) for i, row in enumerate(batch)]
        elif suffix in IMAGE_SUFFIXES:
            rows.append(InputRow(str(path), read_image(path), True))
        else:
            raise ImageError(f"{path}: expected a .png, .jpg, .jpeg or .npy file")
    return rows


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A PNG or JPEG file as one uint8 (3072,) row, center-cropped and resized to 32x32."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImageError(
            f"{path}: reading PNG/JPEG needs Pillow: "
            "pip install 'distnet-ray[images]' (a .npy batch needs nothing)"
        ) from None
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side))
            if image.size != (SIDE, SIDE):
                image = image.resize((SIDE, SIDE), Image.Resampling.LANCZOS)
            pixels = np.asarray(image, dtype=np.uint8)  # (32, 32, 3)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageError(f"{path}: not a readable PNG/JPEG image ({err})") from None
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)).reshape(ROW)


def _read_npy(path: Path) -> np.ndarray:
    try:
        batch = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ImageError(f"{path}: not a readable .npy array of numbers ({err})") from None
    if not isinstance(batch, np.ndarray) or batch.dtype.kind not in "uif":
        raise ImageError(f"{path}: expected numbers, got dtype {batch.dtype}")
    if batch.dtype.kind in "ui" and batch.dtype != np.uint8:
        if batch.size and (batch.min() < 0 or batch.max() > 255):
            raise ImageError(f"{path}: integer pixels must lie in 0..255")
        batch = batch.astype(np.uint8)
    if batch.ndim in (1, 3):  # one image
        batch = batch[None]
    if batch.ndim == 4 and batch.shape[1:] == (SIDE, SIDE, CHANNELS):
        batch = batch.transpose(0, 3, 1, 2)  # channels last -> the dataset's planes
    if (
        batch.ndim not in (2, 4)
        or not len(batch)
        or math.prod(batch.shape[1:]) != ROW
        or (batch.ndim == 4 and batch.shape[1:] != (CHANNELS, SIDE, SIDE))
    ):
        raise ImageError(
            f"{path}: expected (N, 3072), (N, 3, 32, 32) or (N, 32, 32, 3) "
            f"images, got shape {batch.shape}"
        )
    return batch.reshape(len(batch), ROW)
