"""One shard = one Arrow IPC file with one record batch: `image` (3072 uint8) and `label` (int64).

Images are stored as fixed_size_list<uint8>[3072] in the tarball's own pixel order, so any
Arrow tool reads them as they are, and a reader gets a zero-copy (rows, 3072) uint8 view of
the column's flat values buffer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyarrow import fs as pafs

from distnet.data import fs
from distnet.data.errors import DataError
from distnet.data.manifest import ShardInfo

IMAGE_SIZE = 3072
SCHEMA = pa.schema([("image", pa.list_(pa.uint8(), IMAGE_SIZE)), ("label", pa.int64())])


@dataclass(frozen=True)
class Shard:
    images: np.ndarray  # uint8 (rows, 3072), a read-only view into the file (or its bytes)
    labels: np.ndarray  # int64 (rows,)


def encode_shard(images: np.ndarray, labels: np.ndarray) -> pa.Buffer:
    """Serialize uint8 (rows, 3072) images and their labels as an uncompressed IPC file
    (uncompressed so readers can memory-map it)."""
    flat = pa.array(np.ascontiguousarray(images).reshape(-1), type=pa.uint8())
    image_column = pa.FixedSizeListArray.from_arrays(flat, IMAGE_SIZE)
    batch = pa.record_batch([image_column, pa.array(labels, type=pa.int64())], schema=SCHEMA)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, SCHEMA) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def sha256(data: pa.Buffer | bytes) -> str:
    return hashlib.sha256(memoryview(data)).hexdigest()


def open_shard(filesystem: pafs.FileSystem, root: str, info: ShardInfo, verify: bool) -> Shard:
    """Open one shard listed in a manifest: memory-mapped on local disk, read into memory
    elsewhere. `verify` checks its SHA-256 first; schema and row count are always checked."""
    path = fs.join(root, info.file)
    if not fs.exists(filesystem, path):
        raise DataError(f"shard {path} listed in the manifest is missing")
    with fs.translate_errors(f"shard {path}"):
        if fs.is_local(filesystem):
            buffer = pa.memory_map(path, "r").read_buffer()
        else:
            buffer = pa.py_buffer(fs.read_bytes(filesystem, path))
    if verify and (buffer.size != info.bytes or sha256(buffer) != info.sha256):
        raise DataError(
            f"shard {path} is corrupt or truncated "
            "(its SHA-256 differs from the manifest); run `distnet data prepare` again"
        )
    try:
        reader = pa.ipc.open_file(buffer)
        check_layout(path, reader)
        batch = reader.get_batch(0)
        if batch.num_rows != info.rows:
            raise DataError(f"shard {path} holds {batch.num_rows} rows, manifest says {info.rows}")
        if any(column.null_count for column in batch.columns):
            raise DataError(f"shard {path} has null values")
        images = batch.column("image").flatten().to_numpy(zero_copy_only=True)
        labels = batch.column("label").to_numpy(zero_copy_only=True)
    except pa.ArrowException as err:
        raise DataError(f"shard {path} is not a readable Arrow file ({first_line(err)})") from err
    return Shard(images=images.reshape(batch.num_rows, IMAGE_SIZE), labels=labels)


def check_layout(path: str, reader: pa.ipc.RecordBatchFileReader) -> None:
    """One record batch with SCHEMA, or a DataError naming `path`."""
    if reader.schema != SCHEMA or reader.num_record_batches != 1:
        raise DataError(
            f"shard {path} has {reader.num_record_batches} record batch(es) of "
            f"({_columns(reader.schema)}), expected one of ({_columns(SCHEMA)})"
        )


def _columns(schema: pa.Schema) -> str:
    return ", ".join(f"{column.name}: {column.type}" for column in schema)


def first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__
