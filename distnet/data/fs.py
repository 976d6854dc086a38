"""Where datasets live: local paths or any pyarrow filesystem URI, with atomic writes.

A plain path means the local disk; anything with a scheme (`file://`, `s3://`, `gs://`,
`hdfs://`) goes through `pyarrow.fs.FileSystem.from_uri`, so the same code writes to a
laptop's disk and to object storage.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pyarrow as pa
from pyarrow import fs as pafs

from distnet.atomic import atomic_write
from distnet.data.errors import DataError


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Split `uri` into (filesystem, path inside it)."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    with translate_errors(uri):
        filesystem, path = pafs.FileSystem.from_uri(uri)
    return filesystem, path.rstrip("/") or "/"


def is_local(filesystem: pafs.FileSystem) -> bool:
    return isinstance(filesystem, pafs.LocalFileSystem)


@contextmanager
def translate_errors(where: str) -> Iterator[None]:
    """Turn the OS / Arrow errors a user-supplied location can cause into one DataError."""
    try:
        yield
    except (OSError, pa.ArrowException) as err:
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise DataError(f"{where}: {reason}") from err


def join(root: str, relative: str) -> str:
    return posixpath.join(root, relative)


def exists(filesystem: pafs.FileSystem, path: str) -> bool:
    with translate_errors(path):
        return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def file_size(filesystem: pafs.FileSystem, path: str) -> int | None:
    """Size in bytes, or None when `path` is not a file."""
    with translate_errors(path):
        info = filesystem.get_file_info(path)
    return info.size if info.type == pafs.FileType.File else None


def read_bytes(filesystem: pafs.FileSystem, path: str) -> bytes:
    with translate_errors(path):
        with filesystem.open_input_stream(path) as stream:
            return stream.read()


def make_dirs(filesystem: pafs.FileSystem, path: str) -> None:
    with translate_errors(f"cannot create {path}"):
        filesystem.create_dir(path, recursive=True)


def delete_file(filesystem: pafs.FileSystem, path: str) -> None:
    with translate_errors(f"cannot delete {path}"):
        filesystem.delete_file(path)


def write_atomic(filesystem: pafs.FileSystem, path: str, data: bytes | pa.Buffer) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one.

    Locally: distnet.atomic.atomic_write (a temporary file, fsync, rename). Object stores
    publish an object only when its upload completes, so one upload is atomic; but pyarrow
    completes an upload even when a write fails, so a failed write deletes what it left.
    """
    with translate_errors(f"cannot write {path}"):
        if not is_local(filesystem):
            try:
                with filesystem.open_output_stream(path) as stream:
                    stream.write(data)
            except BaseException:
                with suppress(OSError):
                    filesystem.delete_file(path)
                raise
            return
        with atomic_write(path) as handle:
            handle.write(data)
