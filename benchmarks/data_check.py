"""Check a prepared CIFAR-10 dataset against its tarball, and time the reader.

    python benchmarks/data_check.py --tarball /work/shared/data/cifar-10-python.tar.gz \
        --md5 04140a4bf8b940be148901d3b3b8e5fb --dataset /tmp/cifar-arrow

Pixels and labels of train (first 49,000), val (last 1,000) and test must equal the tarball's
bit for bit, and the manifest's mean the train split's mean. The tarball is read here, apart
from distnet's tarball parser (cifar.py), after its MD5 is verified; its pickles go through
distnet's restricted unpickler all the same, which builds numpy arrays and nothing else
(a plain pickle.load would run whatever a crafted member names). Then one worker
assembles float32 minibatches of --batch random rows with split.batch and we report images/s.
"""

from __future__ import annotations

import argparse
import hashlib
import tarfile
import time

import numpy as np

from distnet.data.reader import load_manifest, open_split
from distnet.data.unpickle import restricted_loads


def tarball_arrays(path: str, md5: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != md5:
        raise SystemExit(f"{path}: MD5 {digest.hexdigest()} != {md5}; refusing to unpickle it")
    with tarfile.open(path) as archive:

        def batch(name):
            member = f"cifar-10-batches-py/{name}"
            raw = restricted_loads(archive.extractfile(member).read(), f"{path}: {member}")
            return raw[b"data"], np.array(raw[b"labels"])

        train = [batch(f"data_batch_{i}") for i in range(1, 6)]
        return {
            "train": (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
            "test": batch("test_batch"),
        }


def check(dataset: str, tarball: str, md5: str) -> None:
    manifest = load_manifest(dataset)
    arrays = tarball_arrays(tarball, md5)
    num_train = len(arrays["train"][1]) - manifest.num_val
    expected = {
        "train": (arrays["train"][0][:num_train], arrays["train"][1][:num_train]),
        "val": (arrays["train"][0][num_train:], arrays["train"][1][num_train:]),
        "test": arrays["test"],
    }
    for name, (images, labels) in expected.items():
        split = open_split(dataset, name, verify=True)
        got_images, got_labels = split.take(np.arange(split.num_rows))
        assert np.array_equal(got_images, images), f"{name}: pixels differ"
        assert np.array_equal(got_labels, labels), f"{name}: labels differ"
        print(f"{name:<5} {split.num_rows:>6} images: pixels and labels match the tarball")
    mean = expected["train"][0].mean(axis=0, dtype=np.float64).astype(np.float32)
    assert np.array_equal(manifest.mean_array(), mean), "manifest mean differs"
    print("mean  matches the train split's per-pixel mean")


def reader_throughput(dataset: str, batch: int, seconds: float) -> None:
    start = time.perf_counter()
    split = open_split(dataset, "train", worker_index=0, num_workers=1, verify=True)
    print(f"open_split(train, verify=True): {time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    open_split(dataset, "train", worker_index=0, num_workers=1, verify=False)
    print(f"open_split(train, verify=False): {time.perf_counter() - start:.3f} s")
    rng = np.random.default_rng(0)
    for label, out in (
        ("new array per batch", None),
        ("reused out= buffer", np.empty((batch, 3072), np.float32)),
    ):
        images = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            X, y = split.batch(rng.integers(0, split.num_rows, batch), out=out)
            images += len(y)
        rate = images / (time.perf_counter() - start)
        print(f"split.batch({batch} random rows), {label}: {rate:,.0f} images/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="/tmp/cifar-arrow")
    parser.add_argument("--tarball", default="/work/shared/data/cifar-10-python.tar.gz")
    parser.add_argument("--md5", default="04140a4bf8b940be148901d3b3b8e5fb")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    check(args.dataset, args.tarball, args.md5)
    reader_throughput(args.dataset, args.batch, args.seconds)


if __name__ == "__main__":
    main()
