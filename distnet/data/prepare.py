"""Turn the CIFAR-10 python tarball into Arrow shards plus `manifest.json`.

    prepare_dataset("/data/cifar10", source="cifar-10-python.tar.gz", md5="...", shards=8)

Shards are written atomically and the manifest last, after the previous manifest was
removed: a dataset is complete exactly when its manifest exists and its shards match it.
Re-running on a complete dataset from the same tarball (same shards, same val size)
checks it and returns without writing.
"""

from __future__ import annotations

import posixpath
import sys
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from pyarrow import fs as pafs
from tqdm import tqdm

from distnet.data import fs
from distnet.data.cifar import CifarArrays, read_cifar_tarball
from distnet.data.download import cache_dir, download, file_md5
from distnet.data.errors import DataError
from distnet.data.manifest import MANIFEST_NAME, SPLITS, Manifest, ShardInfo, SplitInfo
from distnet.data.reader import load_manifest, verify_dataset
from distnet.data.shards import encode_shard, sha256

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"


def default_out() -> str:
    return str(cache_dir() / "cifar10")


def prepare_dataset(
    out: str | None = None,
    source: str | None = None,
    shards: int = 8,
    md5: str | None = None,
    verify: bool = True,
    num_val: int = 1000,
    progress: bool = True,
) -> Manifest:
    """Write train/val/test shards of the tarball at `source` (a path or http(s) URL; the
    official tarball, downloaded into the cache, when None) to `out` (a path or pyarrow URI).

    The tarball must have MD5 `md5` (the official one when None) unless `verify` is False.
    Val is the last `num_val` training images (the assignment's 49,000/1,000 split).
    """
    out = out or default_out()
    if shards < 1 or num_val < 1:
        raise DataError(f"shards ({shards}) and num_val ({num_val}) must be at least 1")
    if md5 is not None and not verify:
        raise DataError("an expected md5 and verify=False (--no-verify) contradict each other")
    expected_md5 = (md5 or OFFICIAL_MD5).lower() if verify else None
    tarball, source_md5 = _fetch_source(source, expected_md5, progress)
    filesystem, root = fs.resolve(out)

    existing = _existing_manifest(filesystem, root, out)
    if (
        existing
        and existing.source_md5 == source_md5
        and existing.num_val == num_val
        and existing.shards_per_split == shards
    ):
        try:
            return verify_dataset(out)
        except DataError:
            pass  # damaged: write it again
    arrays = read_cifar_tarball(tarball)
    for split in SPLITS:
        fs.make_dirs(filesystem, fs.join(root, split))
    if existing:  # from here on the old manifest would describe files being replaced
        fs.delete_file(filesystem, fs.join(root, MANIFEST_NAME))
    manifest = _write_shards(filesystem, root, arrays, source_md5, shards, num_val, progress)
    fs.write_atomic(filesystem, fs.join(root, MANIFEST_NAME), manifest.to_json().encode())
    _remove_stale_shards(filesystem, root, manifest)
    return manifest


def ensure_dataset(
    path: str,
    source: str | None = None,
    md5: str | None = None,
    verify: bool = True,
    shards: int = 8,
    num_val: int = 1000,
    progress: bool = True,
) -> Manifest:
    """The manifest at `path` if it holds a complete dataset (all shards present with the
    right sizes); prepare it there first if `path` holds no dataset yet (the trainer's
    entry point).

    A dataset that is there but damaged is rebuilt only from the tarball it was made of
    (same MD5, shards and val size); anything else, and above all an unreadable manifest,
    is a DataError saying what is wrong: never a download over a user's own dataset."""
    filesystem, root = fs.resolve(path)
    if not fs.exists(filesystem, fs.join(root, MANIFEST_NAME)):
        return prepare_dataset(
            path,
            source=source,
            shards=shards,
            md5=md5,
            verify=verify,
            num_val=num_val,
            progress=progress,
        )
    manifest = load_manifest(path)  # a broken manifest is an error, not a reason to rebuild
    try:
        return verify_dataset(path, checksums=False)
    except DataError as err:
        expected = (md5 or OFFICIAL_MD5).lower() if verify else None
        if (manifest.source_md5, manifest.shards_per_split, manifest.num_val) != (
            expected,
            shards,
            num_val,
        ):
            raise DataError(
                f"{err}; not rebuilt, since this dataset was made from another "
                f"tarball (MD5 {manifest.source_md5}) or with other settings: run "
                f"`distnet data prepare --out {path}` with its source"
            ) from err
        return prepare_dataset(
            path,
            source=source,
            shards=shards,
            md5=md5,
            verify=verify,
            num_val=num_val,
            progress=progress,
        )


def _fetch_source(source: str | None, expected_md5: str | None, progress: bool) -> tuple[Path, str]:
    """Local path of the tarball and its MD5, downloading it into the cache for a URL."""
    source = source or OFFICIAL_URL
    if source.startswith(("http://", "https://")):
        name = posixpath.basename(urlparse(source).path) or "download"
        tarball = download(source, cache_dir() / name, expected_md5, progress=progress)
        return tarball, expected_md5 or file_md5(tarball)
    if "://" in source:
        raise DataError(f"source {source} must be a local file or an http(s) URL")
    tarball = Path(source).expanduser()
    if not tarball.is_file():
        raise DataError(f"source {tarball} does not exist or is not a file")
    try:
        actual = file_md5(tarball)
    except OSError as err:
        raise DataError(f"cannot read {tarball}: {err.strerror or err}") from err
    if expected_md5 is not None and actual != expected_md5:
        what = " of the official cifar-10-python.tar.gz" if expected_md5 == OFFICIAL_MD5 else ""
        raise DataError(
            f"{tarball} has MD5 {actual}, not the expected {expected_md5}{what}; "
            f"if you trust this file pass --md5 {actual} (or --no-verify)"
        )
    return tarball, actual


def _existing_manifest(filesystem: pafs.FileSystem, root: str, out: str) -> Manifest | None:
    path = fs.join(root, MANIFEST_NAME)
    if not fs.exists(filesystem, path):
        return None
    try:
        return Manifest.from_json(fs.read_bytes(filesystem, path), path)
    except DataError:
        return None  # unreadable: it will be replaced


def _write_shards(
    filesystem: pafs.FileSystem,
    root: str,
    arrays: CifarArrays,
    source_md5: str,
    shards: int,
    num_val: int,
    progress: bool,
) -> Manifest:
    num_train = len(arrays.train_labels) - num_val
    if num_train < 1:
        raise DataError(
            f"num_val ({num_val}) leaves no training images "
            f"(the tarball has {len(arrays.train_labels)})"
        )
    splits = {
        "train": (arrays.train_images[:num_train], arrays.train_labels[:num_train]),
        "val": (arrays.train_images[num_train:], arrays.train_labels[num_train:]),
        "test": (arrays.test_images, arrays.test_labels),
    }
    for name, (_, labels) in splits.items():
        if len(labels) < shards:
            raise DataError(
                f"{shards} shards is more than the {len(labels)} images of split {name}"
            )
    written = {}
    with tqdm(
        total=len(splits) * shards,
        desc="writing shards",
        unit="shard",
        file=sys.stderr,
        disable=not progress,
        leave=False,
    ) as bar:
        for name, (images, labels) in splits.items():
            infos = []
            for k in range(shards):
                rows = slice(k * len(labels) // shards, (k + 1) * len(labels) // shards)
                data = encode_shard(images[rows], labels[rows])
                relative = f"{name}/shard-{k:05d}-of-{shards:05d}.arrow"
                fs.write_atomic(filesystem, fs.join(root, relative), data)
                infos.append(ShardInfo(relative, len(labels[rows]), data.size, sha256(data)))
                bar.update()
            written[name] = SplitInfo(rows=len(labels), shards=infos)
    mean = splits["train"][0].mean(axis=0, dtype=np.float64).astype(np.float32)
    return Manifest(
        splits=written,
        label_names=arrays.label_names,
        source_md5=source_md5,
        num_val=num_val,
        mean=mean.tolist(),
    )


def _remove_stale_shards(filesystem: pafs.FileSystem, root: str, manifest: Manifest) -> None:
    """Delete shard files (and temporaries) an earlier run with another shard count left."""
    listed = {shard.file for split in manifest.splits.values() for shard in split.shards}
    for split in manifest.splits:
        selector = pafs.FileSelector(fs.join(root, split), allow_not_found=True)
        with fs.translate_errors(selector.base_dir):
            found = filesystem.get_file_info(selector)
        for info in found:
            relative = f"{split}/{info.base_name}"
            if info.base_name.startswith("shard-") and relative not in listed:
                fs.delete_file(filesystem, info.path)
