"""Checkpoint locations on any pyarrow filesystem: a local Path, or a RemotePath for a URI.

    directory = as_path("s3://bucket/runs/large")   # RemotePath; "checkpoints/x" -> Path
    path = directory / "ckpt-00000010.npz"
    with replace_atomically(path) as f:              # the old object or the whole new one
        f.write(data)

A RemotePath has the few pathlib.Path operations checkpoints use (name, with_name, /,
is_file, is_dir, iterdir, mkdir, unlink, replace), so checkpoint code is written once for
the laptop's disk and for object storage that every node of a cluster reaches (`s3://`,
`gs://`, `hdfs://`; `file://` is the local disk). A URI's query (endpoint_override=...)
stays on every path below it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
from pyarrow import fs as pafs

from distnet.atomic import atomic_write
from distnet.data import fs


@dataclass(frozen=True, order=True)
class RemotePath:
    """A file or directory behind a filesystem URI such as s3://bucket/key?options."""

    uri: str
    filesystem: pafs.FileSystem = field(compare=False, repr=False)
    path: str = field(compare=False, repr=False)  # inside the filesystem

    @classmethod
    def parse(cls, uri: str) -> RemotePath:
        filesystem, path = fs.resolve(uri)
        return cls(uri, filesystem, path)

    def __str__(self) -> str:
        return self.uri

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def __truediv__(self, name: str) -> RemotePath:
        base, sep, query = self.uri.partition("?")
        return RemotePath(
            f"{base.rstrip('/')}/{name}{sep}{query}", self.filesystem, fs.join(self.path, name)
        )

    def with_name(self, name: str) -> RemotePath:
        base, sep, query = self.uri.partition("?")
        parent = base.rstrip("/").rsplit("/", 1)[0]
        return RemotePath(
            f"{parent}/{name}{sep}{query}",
            self.filesystem,
            fs.join(self.path.rstrip("/").rsplit("/", 1)[0], name),
        )

    def _type(self) -> pafs.FileType:
        return self.filesystem.get_file_info(self.path).type

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def iterdir(self) -> Iterator[RemotePath]:
        selector = pafs.FileSelector(self.path, allow_not_found=True)
        for info in self.filesystem.get_file_info(selector):
            yield self / info.base_name

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        self.filesystem.create_dir(self.path, recursive=parents)

    def unlink(self, missing_ok: bool = False) -> None:
        if missing_ok and self._type() == pafs.FileType.NotFound:
            return
        self.filesystem.delete_file(self.path)

    def replace(self, target: RemotePath) -> RemotePath:
        self.filesystem.move(self.path, target.path)
        return target

    def read_bytes(self) -> bytes:
        if not self.is_file():
            raise FileNotFoundError(self.uri)
        with self.filesystem.open_input_stream(self.path) as stream:
            return stream.read()


# The schemes a checkpoint or log location may use (pyarrow's filesystems built in here).
SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs")


def uri_problem(uri: str) -> str | None:
    """What is wrong with a location URI, checked without the network (so before a run
    starts anything): an unknown scheme, a missing bucket or host, an option pyarrow does
    not take; None for a URI that parses (or a plain path)."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return None
    if scheme.lower() not in SCHEMES:
        return f"has an unsupported scheme {scheme}:// (use a path or {', '.join(SCHEMES)})"
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    if scheme.lower() == "file":
        return None if authority in ("", "localhost") else "must be file:///absolute/path"
    if not authority:
        return f"names no {'host' if scheme.lower() in ('hdfs', 'viewfs') else 'bucket'}"
    if scheme.lower() in ("hdfs", "viewfs"):  # parsing it loads the JVM and connects
        return None
    probe = uri
    if scheme.lower() == "s3" and "region=" not in uri:  # else pyarrow asks AWS for it
        probe += ("&" if "?" in uri else "?") + "region=us-east-1"
    try:
        pafs.FileSystem.from_uri(probe)
    except (pa.ArrowException, OSError) as err:
        return f"is not a valid URI ({str(err).splitlines()[0]})"
    return None


def as_path(location: str | os.PathLike) -> Path | RemotePath:
    """A Path for a local location (a plain path or file://), else a RemotePath."""
    if isinstance(location, (Path, RemotePath)):
        return location
    location = os.fspath(location)
    if "://" not in location:
        return Path(location)
    remote = RemotePath.parse(location)
    return Path(remote.path) if fs.is_local(remote.filesystem) else remote


@contextmanager
def replace_atomically(path: Path | RemotePath) -> Iterator[BinaryIO]:
    """A binary file whose contents replace `path` when the block ends normally: locally
    distnet.atomic.atomic_write, remotely one upload (see distnet.data.fs.write_atomic)."""
    if isinstance(path, Path):
        with atomic_write(path) as handle:
            yield handle
        return
    buffer = io.BytesIO()
    yield buffer
    fs.write_atomic(path.filesystem, path.path, buffer.getvalue())


def readable(path: Path | RemotePath) -> Path | BinaryIO:
    """What np.load reads `path` from (a remote file is fetched whole)."""
    return path if isinstance(path, Path) else io.BytesIO(path.read_bytes())
