"""Small CIFAR-10 tarballs in the official layout, and prepared datasets built from them.

    tarball = make_cifar_tarball(tmp_path / "cifar.tar.gz")
    dataset = make_prepared_dataset(tmp_path, shards=4)   # a directory for open_split()

Batches are pickled like the official Python 2 files (protocol 2, bytes as BINSTRING, numpy
arrays by `_reconstruct`), so the restricted unpickler sees what it sees in the real file.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-py"
LABEL_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


@dataclass
class FakeCifar:
    train_images: np.ndarray  # uint8 (5 * n_train_per_batch, 3072)
    train_labels: np.ndarray  # int64
    test_images: np.ndarray
    test_labels: np.ndarray


def fake_cifar(n_train_per_batch: int = 60, n_test: int = 50, seed: int = 0) -> FakeCifar:
    rng = np.random.default_rng(seed)
    n_train = 5 * n_train_per_batch
    return FakeCifar(
        train_images=rng.integers(0, 256, (n_train, 3072), dtype=np.uint8),
        train_labels=rng.integers(0, 10, n_train).astype(np.int64),
        test_images=rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
        test_labels=rng.integers(0, 10, n_test).astype(np.int64),
    )


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it: bytes as (SHORT_)BINSTRING, not `_codecs.encode`."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_bytes(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_bytes


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def batch_pickle(images: np.ndarray, labels, name: str = "batch") -> bytes:
    """One batch file, like data_batch_1: dict with bytes keys, labels a list of ints."""
    return py2_pickle(
        {
            b"batch_label": name.encode(),
            b"labels": [int(label) for label in labels],
            b"data": images,
            b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(labels))],
        }
    )


def cifar_members(data: FakeCifar) -> dict[str, bytes]:
    """Member name -> file bytes, as in the official tarball (tests edit this to break it)."""
    n = len(data.train_labels) // 5
    members = {
        f"{FOLDER}/batches.meta": py2_pickle(
            {
                b"num_cases_per_batch": n,
                b"label_names": [name.encode() for name in LABEL_NAMES],
                b"num_vis": 3072,
            }
        ),
        f"{FOLDER}/readme.html": b'<meta HTTP-EQUIV="REFRESH" content="0">\n',
        f"{FOLDER}/test_batch": batch_pickle(data.test_images, data.test_labels, "test batch"),
    }
    for i in range(5):
        rows = slice(i * n, (i + 1) * n)
        members[f"{FOLDER}/data_batch_{i + 1}"] = batch_pickle(
            data.train_images[rows], data.train_labels[rows], f"training batch {i + 1} of 5"
        )
    return members


def write_tarball(path, members: dict[str, bytes]) -> Path:
    path = Path(path)
    with tarfile.open(path, "w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return path


def make_cifar_tarball(path, n_train_per_batch: int = 60, n_test: int = 50, seed: int = 0) -> Path:
    """A CIFAR-10 python tarball of random images at `path` (its MD5 is `md5_of(path)`)."""
    return write_tarball(path, cifar_members(fake_cifar(n_train_per_batch, n_test, seed)))


def md5_of(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def make_prepared_dataset(
    tmpdir,
    shards: int = 4,
    n_train_per_batch: int = 60,
    n_test: int = 50,
    num_val: int = 20,
    seed: int = 0,
) -> str:
    """Prepare a small dataset under `tmpdir`; returns its directory (train has
    5 * n_train_per_batch - num_val images, val num_val, test n_test)."""
    from distnet.data.prepare import prepare_dataset

    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    tarball = make_cifar_tarball(tmpdir / "cifar-10-python.tar.gz", n_train_per_batch, n_test, seed)
    out = tmpdir / "cifar10"
    prepare_dataset(
        str(out),
        source=str(tarball),
        shards=shards,
        md5=md5_of(tarball),
        num_val=num_val,
        progress=False,
    )
    return str(out)
