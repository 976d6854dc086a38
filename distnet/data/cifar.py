"""Read the CIFAR-10 python tarball into arrays, checking that it has the official layout.

Layout: `cifar-10-batches-py/` holding `data_batch_1..5` and `test_batch` (pickled dicts
with `data`: uint8 (n, 3072), `labels`: n ints in 0..9) and `batches.meta` (with
`label_names`). Members are read in memory and unpickled with the restricted unpickler.
"""

from __future__ import annotations

import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distnet.data.errors import DataError
from distnet.data.unpickle import restricted_loads

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
IMAGE_SHAPE = (3, 32, 32)
IMAGE_SIZE = 3 * 32 * 32
NUM_CLASSES = 10
# The real batches are ~31 MB; refuse anything that would decompress far beyond that.
MAX_MEMBER_BYTES = 256 * 2**20
CHUNK = 1 << 20


@dataclass(frozen=True)
class CifarArrays:
    train_images: np.ndarray  # uint8 (50000, 3072), batches 1..5 in order
    train_labels: np.ndarray  # int64 (50000,)
    test_images: np.ndarray  # uint8 (10000, 3072)
    test_labels: np.ndarray  # int64 (10000,)
    label_names: list[str]


def read_cifar_tarball(path: Path) -> CifarArrays:
    """Parse and validate a CIFAR-10 python tarball at `path`."""
    batches = _load_members(path)
    train = [_parse_batch(batches[name], f"{path}: {FOLDER}/{name}") for name in TRAIN_BATCHES]
    test_images, test_labels = _parse_batch(batches[TEST_BATCH], f"{path}: {FOLDER}/{TEST_BATCH}")
    return CifarArrays(
        train_images=np.concatenate([images for images, _ in train]),
        train_labels=np.concatenate([labels for _, labels in train]),
        test_images=test_images,
        test_labels=test_labels,
        label_names=_parse_label_names(batches[META], f"{path}: {FOLDER}/{META}"),
    )


def _load_members(path: Path) -> dict[str, dict]:
    """The needed members, unpickled as they are read (so only one is held as bytes)."""
    wanted = {*TRAIN_BATCHES, TEST_BATCH, META}
    found: dict[str, dict] = {}
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                folder, _, name = member.name.rpartition("/")
                if folder.rstrip("/").endswith(FOLDER) and name in wanted and member.isfile():
                    if member.size > MAX_MEMBER_BYTES:
                        raise DataError(
                            f"{path}: member {member.name} is implausibly large "
                            f"({member.size} bytes) for a CIFAR batch"
                        )
                    found[name] = _load_dict(
                        archive.extractfile(member).read(), f"{path}: {member.name}"
                    )
            # tarfile stops at the end-of-archive marker, before the gzip trailer: read on
            # so that gzip checks its CRC and corrupted bytes cannot pass unnoticed.
            while archive.fileobj.read(CHUNK):
                pass
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise DataError(f"{path}: truncated or corrupt tarball ({err})") from err
    missing = [name for name in sorted(wanted) if name not in found]
    if missing:
        raise DataError(
            f"{path}: not the CIFAR-10 python layout, missing "
            + ", ".join(f"{FOLDER}/{name}" for name in missing)
        )
    return found


def _load_dict(data: bytes, where: str) -> dict:
    batch = restricted_loads(data, where)
    if not isinstance(batch, dict):
        raise DataError(f"{where}: expected a pickled dict, got {type(batch).__name__}")
    # Python 2 pickles give bytes keys; accept str keys too (re-pickled copies).
    return {
        key.decode("latin1") if isinstance(key, bytes) else key: value
        for key, value in batch.items()
    }


def _parse_batch(batch: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{where}: batch lacks 'data' or 'labels'")
    images, labels = batch["data"], batch["labels"]
    if not (
        isinstance(images, np.ndarray)
        and images.dtype == np.uint8
        and images.ndim == 2
        and images.shape[1] == IMAGE_SIZE
    ):
        shape = getattr(images, "shape", None)
        dtype = getattr(images, "dtype", type(images).__name__)
        raise DataError(
            f"{where}: data must be uint8 of shape (n, {IMAGE_SIZE}), got {dtype} {shape}"
        )
    try:
        labels = np.asarray(labels)
    except Exception as err:
        raise DataError(f"{where}: labels are not a list of integers") from err
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"{where}: labels must be a list of integers, got {labels.dtype} {labels.shape}"
        )
    if len(labels) != len(images):
        raise DataError(f"{where}: {len(labels)} labels for {len(images)} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(
            f"{where}: labels must lie in 0..{NUM_CLASSES - 1}, "
            f"found {labels.min()}..{labels.max()}"
        )
    return np.ascontiguousarray(images), labels.astype(np.int64)


def _parse_label_names(meta: dict, where: str) -> list[str]:
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise DataError(f"{where}: expected {NUM_CLASSES} label_names")
    return [name.decode("utf-8") if isinstance(name, bytes) else str(name) for name in names]
