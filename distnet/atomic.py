"""Writing a local file so that readers see the old file or the whole new one, never part.

    with atomic_write("checkpoints/ckpt-00000010.npz") as f:
        np.savez(f, allow_pickle=False, **arrays)

The data goes to a temporary name in the same directory (`.NAME.<random>.tmp`, which no
reader of checkpoints or shards takes for theirs), is fsynced, renamed over NAME, and the
directory is fsynced so that the rename survives a power cut too. An exception inside the
block, or one while writing, leaves NAME as it was and removes the temporary file; a
process killed mid-write leaves only the temporary file behind.

A file that grows elsewhere (a resumable download's `.part`) takes its name the same way:

    replace_durably(partial, dest)
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file object whose contents replace `path` when the block ends normally."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        # Created as open() creates any file (the umask decides its permissions).
        with open(temp, "xb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def replace_durably(source: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Rename the finished, closed file `source` over `dest`, its data fsynced first (or a
    power cut could leave `dest` named but empty) and the directory after."""
    fd = os.open(source, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(source, dest)
    _fsync_directory(Path(dest).parent)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
