"""TensorBoard event files that never stall training and never import PyTorch.

    log = EventLog("runs/exp")
    log.add(summary, step)   # a tensorboardX Summary protobuf; returns at once
    log.close()              # waits at most close_timeout_s for the writer

`logdir` may be a filesystem URI as checkpoint.dir may (`s3://bucket/runs/x`, `gs://`,
`hdfs://`; `file://` is the local disk), so that the logs outlive the head node: the events
are written to a local staging file, and that file is uploaded whole (object stores cannot
append) at each flush() (each epoch), at most UPLOAD_EVERY_S apart in between, and at
close(). TensorBoard reads s3:// itself (through boto3; S3_ENDPOINT for a non-AWS server).

The protobufs and the record format are tensorboardX's; only the thread that writes them
is ours, for two reasons:
- Importing tensorboardX imports PyTorch whenever it is installed (tensorboardX/writer.py
  tries `import torch` to accept tensors). distnet never uses it, and loading it can kill a
  process outright: oneMKL inside libtorch_cpu.so calls getcwd() while it loads and aborts
  ("Intel oneMKL FATAL ERROR: Cannot load .../libtorch_cpu.so") when the working directory
  has been deleted, as happens to a Ray job's driver when another node on the same host
  unpacks the job's working_dir over it (issue 17). `tensorboardx()` imports it with
  PyTorch kept out.
- tensorboardX's writer thread dies on a write error (a full disk) and its bounded queue
  then blocks every add_* forever (issue 12). Here the caller only ever does put_nowait: a
  writer that failed, or fell QUEUE_EVENTS behind (a stuck disk), becomes one warning on
  stderr and the run goes on without logs.
"""

from __future__ import annotations

import atexit
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from distnet.data import fs
from distnet.remote_path import RemotePath, as_path

QUEUE_EVENTS = 10_000  # events in flight before the writer counts as stuck
FLUSH_EVERY_S = 1.0  # what TensorBoard shows of a live run is at most this old
UPLOAD_EVERY_S = 10.0  # the same on object storage, where each upload rewrites the file
_FLUSH, _CLOSE = object(), object()


def tensorboardx():
    """The tensorboardX package, imported without PyTorch (unless PyTorch is already in)."""
    if "tensorboardX" not in sys.modules and "torch" not in sys.modules:
        sys.modules["torch"] = None  # `import torch` now raises ImportError, as if absent
        try:
            import tensorboardX.event_file_writer  # noqa: F401  (the package and its protos)
        finally:
            del sys.modules["torch"]
    import tensorboardX.event_file_writer
    import tensorboardX.summary

    return tensorboardX


class EventLog:
    """One TensorBoard event file in `logdir`, written by a background thread."""

    def __init__(self, logdir: str, close_timeout_s: float = 10.0):
        tbx = tensorboardx()
        self._event = tbx.event_file_writer.event_pb2.Event
        self.close_timeout_s = close_timeout_s
        target = as_path(logdir)
        self._remote: RemotePath | None = None  # where the staged file is uploaded to
        self._staging = None
        if isinstance(target, RemotePath):
            with fs.translate_errors(f"cannot create {target}"):  # a wrong bucket: now
                target.mkdir(parents=True, exist_ok=True)
            self._staging = tempfile.mkdtemp(prefix="distnet-events-")
        local = self._staging or target
        os.makedirs(local, exist_ok=True)
        self._file = tbx.event_file_writer.EventsWriter(os.path.join(local, "events"))
        if self._staging:
            self._remote = target / os.path.basename(self._file._file_name)
        self.path = str(self._remote or self._file._file_name)
        self.failed: str | None = None  # why logging stopped, once it has
        self._warned = False
        self._queue: queue.Queue = queue.Queue(QUEUE_EVENTS)
        self._thread = threading.Thread(
            target=self._write_loop, name="distnet-tensorboard", daemon=True
        )  # a disk that never answers must not
        self._thread.start()  # keep the process alive
        atexit.register(self.close)  # an interrupted run still gets what it logged

    @property
    def active(self) -> bool:
        self._warn_once()
        return self.failed is None

    def add(self, summary, step: int) -> None:
        if self.active:
            self._put(self._event(wall_time=time.time(), step=step, summary=summary))

    def flush(self) -> None:
        if self.active:
            self._put(_FLUSH)

    def close(self) -> None:
        """Write what is queued, waiting at most close_timeout_s; idempotent."""
        atexit.unregister(self.close)
        if self._thread.is_alive() and self.failed is None:
            self._put(_CLOSE)
            self._thread.join(self.close_timeout_s)
            if self._thread.is_alive():
                self.failed = (
                    f"the writer did not finish within {self.close_timeout_s:g} s; "
                    "the last events may be missing"
                )
        self._warn_once()

    def _put(self, item) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.failed = f"the writer fell {QUEUE_EVENTS} events behind (is the disk stuck?)"
            self._warn_once()

    def _warn_once(self) -> None:
        if self.failed is not None and not self._warned:
            self._warned = True
            print(
                f"distnet: warning: TensorBoard logging to {self.path} stopped: "
                f"{self.failed}; training goes on without it",
                file=sys.stderr,
            )

    def _write_loop(self) -> None:
        last_flush = last_upload = time.monotonic()
        pending = unsent = False  # events not flushed to the file / file not uploaded
        try:
            while True:
                try:
                    item = self._queue.get(timeout=FLUSH_EVERY_S)
                except queue.Empty:
                    item = None  # a quiet second: flush what is pending
                if item is _CLOSE:
                    self._file.close()
                    self._upload()
                    if self._staging:
                        shutil.rmtree(self._staging, ignore_errors=True)
                    return
                if item is not None and item is not _FLUSH:
                    self._file.write_event(item)
                    pending = True
                now = time.monotonic()
                if pending and (item is None or item is _FLUSH or now - last_flush > FLUSH_EVERY_S):
                    self._file.flush()
                    last_flush, pending, unsent = now, False, True
                if unsent and (item is _FLUSH or now - last_upload > UPLOAD_EVERY_S):
                    self._upload()
                    last_upload, unsent = now, False
        except Exception as err:  # noqa: BLE001 - any failure ends logging, never training
            self.failed = (
                f"{err.strerror}"
                if isinstance(err, OSError) and err.strerror
                else f"{type(err).__name__}: {err}"
            )
            if self._remote:
                self.failed += f" (what was logged is in {self._file._file_name})"
            try:
                self._file._py_recordio_writer._writer.close()
            except OSError:
                pass  # the buffered bytes that failed to write fail again: they are lost

    def _upload(self) -> None:
        """The staged file, whole, as the remote object (one upload: atomic)."""
        if self._remote:
            data = Path(self._file._file_name).read_bytes()
            fs.write_atomic(self._remote.filesystem, self._remote.path, data)
