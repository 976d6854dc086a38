"""The synchronous step's bulk bytes over plain TCP between the actors ("mesh" transport).

Ray places the actors, restarts them and carries each step's small control calls (a few
integers in, a report out, queued one step ahead by the driver); the parameters and the
gradients go over one TCP connection per (worker, server) pair:

    server k --params(t) [+ batchnorm]--> worker i --gradient slice k(t) [+ batchnorm]--> server k

Each server listens on its node's IP (127.0.0.1 on a local Ray) at a port the OS picks;
each worker connects to every server and proves itself with the run's random token (sent
over Ray's authenticated control channel) before anything else is read. On the wire a
frame is a fixed struct header (magic, step, dtype code, element count) and the array's
raw bytes, received straight into a preallocated array: nothing is unpickled, and a frame
whose header is not the one expected is an error. Every socket wait is bounded
(RECV_TIMEOUT_S); a dead peer is seen at once as EOF. Any failure closes all of an
actor's connections, so its peers fail at once too, and the driver's recovery connects a
new mesh (`generation`) between the same, or Ray-restarted, actors.
"""

from __future__ import annotations

import hmac
import socket
import struct
import time

import numpy as np

MAGIC = b"DNM1"
HEADER = struct.Struct("<4sqBq")  # magic, step, dtype code, element count
HELLO = struct.Struct("<16sq")  # token, worker index
DTYPES = [np.dtype(t) for t in ("float32", "float16", "int32", "float64")]
CODES = {dtype: code for code, dtype in enumerate(DTYPES)}
TOKEN_BYTES = 16
# Seconds one socket wait may take: a peer's whole step (a slow conv step, a straggler
# test's sleep) fits many times; a peer that died is EOF long before.
RECV_TIMEOUT_S = 300.0
CONNECT_TIMEOUT_S = 60.0  # for every worker to connect to a server


class MeshError(ConnectionError):
    """A mesh connection failed (a dead or stale peer, a timeout): the driver recovers."""


def node_ip() -> str:
    """The IP this actor's node is known by (127.0.0.1 on a local Ray)."""
    import ray

    return ray.util.get_node_ip_address()


def _configure(conn: socket.socket) -> socket.socket:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.settimeout(RECV_TIMEOUT_S)  # read when a connection is made (tests shorten it)
    return conn


def send_array(conn: socket.socket, step: int, array: np.ndarray) -> None:
    """One frame: header, then the array's bytes (C-contiguous)."""
    array = np.ascontiguousarray(array)
    try:
        conn.sendall(HEADER.pack(MAGIC, step, CODES[array.dtype], array.size))
        conn.sendall(memoryview(array).cast("B"))
    except TimeoutError as err:
        raise MeshError(f"a peer took no data for {RECV_TIMEOUT_S:g} s") from err
    except OSError as err:  # a reset or broken connection: the peer died or failed
        raise MeshError(f"the connection to a peer broke: {err}") from err


def recv_array(conn: socket.socket, step: int, dtype, size: int, out=None) -> np.ndarray:
    """The frame of step `step` holding `size` elements of `dtype`, into `out` if given;
    MeshError on any other frame."""
    got, count = _header(conn, step)
    if got != np.dtype(dtype) or count != size:
        raise MeshError(f"unexpected frame: {count} x {got}, expected {size} x {dtype}")
    array = np.empty(count, got) if out is None else out
    _recv_into(conn, memoryview(array).cast("B"))
    return array


def recv_any(conn: socket.socket, step: int) -> np.ndarray:
    """A frame of step `step` of any dtype and size (a compressed gradient's parts)."""
    array = np.empty(*reversed(_header(conn, step)))
    _recv_into(conn, memoryview(array).cast("B"))
    return array


def _header(conn: socket.socket, step: int) -> tuple[np.dtype, int]:
    """(dtype, element count) of the next frame, which must be of step `step`."""
    magic, got_step, code, count = HEADER.unpack(_recv_exact(conn, HEADER.size))
    if magic != MAGIC or got_step != step or code >= len(DTYPES) or count > 2**40:
        raise MeshError(f"unexpected frame (step {got_step}, expected {step})")
    return DTYPES[code], count


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buffer = bytearray(n)
    _recv_into(conn, memoryview(buffer))
    return bytes(buffer)


def _recv_into(conn: socket.socket, view: memoryview) -> None:
    while view.nbytes:
        try:
            got = conn.recv_into(view)
        except TimeoutError as err:
            raise MeshError(f"a peer sent nothing for {RECV_TIMEOUT_S:g} s") from err
        except OSError as err:
            raise MeshError(f"the connection to a peer broke: {err}") from err
        if not got:
            raise MeshError("the peer closed the connection (it died or failed)")
        view = view[got:]


class _End:
    """One actor's connections of the current mesh generation (-1: none)."""

    def __init__(self):
        self.conns: list[socket.socket] = []
        self.generation = -1

    def check(self, generation: int) -> None:
        if generation != self.generation or not self.conns:
            raise MeshError(f"no mesh of generation {generation} here (have {self.generation})")

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.conns, self.generation = [], -1


class ServerEnd(_End):
    """A parameter server's connections: one per worker, in worker order."""

    def __init__(self):
        super().__init__()
        self.listener: socket.socket | None = None

    def listen(self) -> tuple[str, int]:
        """Open a listening socket on the node's IP; its (ip, port)."""
        self.close()
        ip = node_ip()
        self.listener = socket.create_server((ip, 0), backlog=64)
        return ip, self.listener.getsockname()[1]

    def accept(self, generation: int, token: bytes, workers: int) -> None:
        """Wait (at most CONNECT_TIMEOUT_S) until every worker connected with `token`."""
        if self.listener is None:
            raise MeshError("accept before listen")
        conns: list[socket.socket | None] = [None] * workers
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        try:
            while any(c is None for c in conns):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MeshError(f"workers did not connect in {CONNECT_TIMEOUT_S:g} s")
                self.listener.settimeout(left)
                conn, _ = self.listener.accept()
                conn.settimeout(max(0.1, min(left, 10.0)))
                try:
                    got_token, index = HELLO.unpack(_recv_exact(conn, HELLO.size))
                except (OSError, MeshError):
                    conn.close()
                    continue
                if not hmac.compare_digest(got_token, token) or not 0 <= index < workers:
                    conn.close()  # not one of this run's workers: ignored
                    continue
                if conns[index] is not None:
                    conns[index].close()
                conns[index] = _configure(conn)
        except TimeoutError as err:
            for conn in conns:
                if conn is not None:
                    conn.close()
            raise MeshError(f"workers did not connect in {CONNECT_TIMEOUT_S:g} s") from err
        finally:
            self.listener.close()
            self.listener = None
        self.conns, self.generation = conns, generation

    def close(self) -> None:
        super().close()
        if self.listener is not None:
            self.listener.close()
            self.listener = None


class WorkerEnd(_End):
    """A gradient worker's connections: one per parameter server, in server order."""

    def connect(self, generation: int, token: bytes, index: int, addresses: list) -> None:
        self.close()
        try:
            for ip, port in addresses:
                conn = socket.create_connection((ip, port), timeout=CONNECT_TIMEOUT_S)
                self.conns.append(_configure(conn))
                conn.sendall(HELLO.pack(token, index))
        except OSError as err:
            self.close()
            raise MeshError(f"could not connect to a parameter server: {err}") from err
        self.generation = generation
