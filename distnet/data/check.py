"""What a training run will read, checked before any worker starts.

    manifest = check_dataset(job.data.path, num_workers=3)

A damaged dataset should cost one line naming the file, at once, not a traceback from a
worker or a failure after hours of training. Checked here, cheaply: the manifest; every
shard of every split present with the size, schema and row count the manifest lists (the
row count comes from the Arrow metadata, not the data); enough rows in each split for
every worker. Val and test are small and otherwise read only at the end of an epoch, so
they are checked against their SHA-256 in full here. Each worker checks the SHA-256 of its
own train shards when it opens them (`open_split(..., verify=True)`); on local disk the
train shards are hashed here too, since that costs about 0.1 s for all of CIFAR-10 and
leaves them in the page cache that the workers memory-map. Elsewhere (s3://...) reading
the whole train split on the driver would not be cheap.
"""

from __future__ import annotations

import pyarrow as pa

from distnet.data import fs
from distnet.data.errors import DataError
from distnet.data.manifest import Manifest, ShardInfo
from distnet.data.reader import load_manifest
from distnet.data.shards import check_layout, first_line, open_shard


def check_dataset(uri: str, num_workers: int = 1, checksums: bool = True) -> Manifest:
    """The manifest of the dataset at `uri` once everything a run of `num_workers` worker
    actors will read has passed the checks above; `checksums=False` (the job's
    `data.verify = false`) skips the SHA-256 checks. Raises DataError."""
    filesystem, root = fs.resolve(uri)
    manifest = load_manifest(uri)
    hashed = ("train", "val", "test") if fs.is_local(filesystem) else ("val", "test")
    for name, split in manifest.splits.items():
        if num_workers > split.rows:
            raise DataError(
                f"split {name} of {uri} has {split.rows} images, fewer than the "
                f"{num_workers} workers that each read a share of it"
            )
        for info in split.shards:
            if checksums and name in hashed:
                open_shard(filesystem, root, info, verify=True)
            else:
                _check_metadata(filesystem, root, info)
    return manifest


def _check_metadata(filesystem, root: str, info: ShardInfo) -> None:
    """Size, schema and row count of one shard, reading only its Arrow footer and batch
    headers."""
    path = fs.join(root, info.file)
    size = fs.file_size(filesystem, path)
    if size is None:
        raise DataError(f"shard {path} listed in the manifest is missing")
    if size != info.bytes:
        raise DataError(
            f"shard {path} has {size} bytes, the manifest says {info.bytes}; "
            "run `distnet data prepare` again"
        )
    try:
        with filesystem.open_input_file(path) as handle:
            reader = pa.ipc.open_file(handle)
            check_layout(path, reader)
            rows = reader.count_rows()
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"shard {path} is not a readable Arrow file ({first_line(err)})") from err
    if rows != info.rows:
        raise DataError(f"shard {path} holds {rows} rows, the manifest says {info.rows}")
