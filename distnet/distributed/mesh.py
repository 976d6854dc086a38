"""The synchronous step's bulk bytes between the actors, over TCP or shared memory ("mesh").

Ray places the actors, restarts them and carries each step's small control calls (a few
integers in, a report out, queued one step ahead by the driver); the parameters and the
gradients go over one TCP connection per (worker, server) pair:

    server k --params(t) [+ batchnorm]--> worker i --gradient slice k(t) [+ batchnorm]--> server k

Each server listens on its node's IP (127.0.0.1 on a local Ray) at a port the OS picks;
each worker connects to every server and proves itself with the run's random token (sent
over Ray's authenticated control channel) before anything else is read. On the wire a
frame is a fixed struct header (magic, step, dtype code, element count) and the array's
raw bytes, received straight into a preallocated array: nothing is unpickled, and a frame
whose header is not the one expected is an error.

Where a worker and a server share a machine, a frame's bytes skip the socket: the worker
makes an anonymous shared-memory file (memfd) for the connection and offers it in its
hello; the server maps it through /proc/<pid>/fd and checks a random nonce written at its
start (another machine's process of the same pid and fd holds no such nonce), then
writes its frames into the region's first half and the worker into the second. The
header still goes over TCP: it orders the bytes (written before it is sent, read after it
arrives) and keeps every wait, timeout and failure as it is. Over loopback TCP a 16 MB
frame costs two copies and many wake-ups of both processes (4.4 ms here), through shared
memory one copy (1.9 ms). A frame that does not fit (top-k's indices) goes over TCP.

Every socket wait is bounded (RECV_TIMEOUT_S); a dead peer is seen at once as EOF. Any
failure closes all of an actor's connections, so its peers fail at once too, and the
driver's recovery connects a new mesh (`generation`) between the same, or Ray-restarted,
actors.
"""

from __future__ import annotations

import hmac
import mmap
import os
import secrets
import socket
import struct
import time

import numpy as np

MAGIC = b"DNM1"
HEADER = struct.Struct("<4sqBq")  # magic, step, dtype code, element count
HELLO = struct.Struct("<16sq")  # token, worker index
OFFER = struct.Struct("<qqq16s")  # the worker's shared memory: pid, fd, bytes (0: none), nonce
SHARED = 0x80  # in a header's dtype code: the bytes are in the shared region, not the socket
ALIGN = 64  # frames in a shared slot start on cache lines
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


def send_array(link: Link, step: int, array: np.ndarray) -> None:
    """One frame: header, then the array's bytes (C-contiguous), through the shared region
    when the link has one and the frame fits."""
    array = np.ascontiguousarray(array)
    code = CODES[array.dtype]
    try:
        slot = link.place_out(step, array.nbytes)
        if slot is not None:
            np.copyto(np.frombuffer(slot, array.dtype, array.size), array)
            link.sock.sendall(HEADER.pack(MAGIC, step, code | SHARED, array.size))
            return
        link.sock.sendall(HEADER.pack(MAGIC, step, code, array.size))
        link.sock.sendall(memoryview(array).cast("B"))
    except TimeoutError as err:
        raise MeshError(f"a peer took no data for {RECV_TIMEOUT_S:g} s") from err
    except OSError as err:  # a reset or broken connection: the peer died or failed
        raise MeshError(f"the connection to a peer broke: {err}") from err


def recv_array(link: Link, step: int, dtype, size: int, out=None) -> np.ndarray:
    """The frame of step `step` holding `size` elements of `dtype`, into `out` if given;
    MeshError on any other frame."""
    got, count, shared = _header(link, step)
    if got != np.dtype(dtype) or count != size:
        raise MeshError(f"unexpected frame: {count} x {got}, expected {size} x {dtype}")
    array = np.empty(count, got) if out is None else out
    _read_payload(link, step, shared, array)
    return array


def recv_any(link: Link, step: int, borrow: bool = False) -> np.ndarray:
    """A frame of step `step` of any dtype and size (a compressed gradient's parts).

    `borrow`: a frame in shared memory comes back as a read-only view of the region, no
    copy; it holds until the peer writes its next step's frames, which it does only after
    this end sent it something, so the caller uses it up before its next send."""
    got, count, shared = _header(link, step)
    if borrow and shared:
        view = np.frombuffer(_shared_slot(link, step, got.itemsize * count), got, count)
        view.flags.writeable = False
        return view
    array = np.empty(count, got)
    _read_payload(link, step, shared, array)
    return array


def _header(link: Link, step: int) -> tuple[np.dtype, int, bool]:
    """(dtype, element count, in shared memory) of the next frame, which must be of step
    `step`."""
    magic, got_step, code, count = HEADER.unpack(_recv_exact(link.sock, HEADER.size))
    shared, code = bool(code & SHARED), code & ~SHARED
    if magic != MAGIC or got_step != step or code >= len(DTYPES) or count > 2**40:
        raise MeshError(f"unexpected frame (step {got_step}, expected {step})")
    return DTYPES[code], count, shared


def _read_payload(link: Link, step: int, shared: bool, array: np.ndarray) -> None:
    if not shared:
        _recv_into(link.sock, memoryview(array).cast("B"))
        return
    slot = _shared_slot(link, step, array.nbytes)
    np.copyto(array, np.frombuffer(slot, array.dtype, array.size))


def _shared_slot(link: Link, step: int, nbytes: int) -> memoryview:
    slot = link.place_in(step, nbytes)
    if slot is None:
        raise MeshError("a shared-memory frame where the link has no room for it")
    return slot


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


class Link:
    """One (worker, server) connection: the socket, and the worker's shared region if both
    ends mapped it. Frames of a step are laid out one after another in the sender's slot
    from its start, on both ends alike; a step's frames overwrite the previous step's,
    which the peer has read by then (each step's sends follow the peer's frames of the
    step before)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._map: mmap.mmap | None = None
        self._fd: int | None = None  # the worker's memfd, open while the link lives
        self._slots: tuple[memoryview, memoryview] | None = None  # (out, in)
        self._views: tuple[memoryview, ...] = ()
        self._cursors = ([-1, 0], [-1, 0])  # (out, in), as _slots: step, next offset
        self.send_shared = False  # frames may go through the region (a worker: once one came)

    def share(self, region: mmap.mmap, server_end: bool, fd: int | None = None) -> None:
        """Use `region` (nonce, then the server's slot, then the worker's)."""
        half = (len(region) - ALIGN) // 2
        view = memoryview(region)
        server, worker = view[ALIGN : ALIGN + half], view[ALIGN + half : ALIGN + 2 * half]
        self._map, self._fd, self._views = region, fd, (view, server, worker)
        self._slots = (server, worker) if server_end else (worker, server)
        self.send_shared = server_end

    def place_out(self, step: int, nbytes: int) -> memoryview | None:
        """Where this end writes a frame of `nbytes` of step `step`; None: by the socket."""
        if not self.send_shared:
            return None
        return self._place(0, step, nbytes)

    def place_in(self, step: int, nbytes: int) -> memoryview | None:
        """Where the peer wrote its shared frame of `nbytes` of step `step`."""
        if self._slots is None:
            return None
        self.send_shared = True  # the server shares: so does the worker, from now on
        return self._place(1, step, nbytes)

    def _place(self, which: int, step: int, nbytes: int):
        cursor, slot = self._cursors[which], self._slots[which]
        if cursor[0] != step:
            cursor[:] = [step, 0]
        start = cursor[1]
        if start + nbytes > len(slot):
            return None
        cursor[1] = start + -(-nbytes // ALIGN) * ALIGN
        return slot[start : start + nbytes]

    def shutdown(self) -> None:
        """Wake a send or receive blocked on the socket (it then fails)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        if self._map is not None:
            self._slots = None
            try:
                for view in reversed(self._views):
                    view.release()
                self._map.close()
            except BufferError:  # a frame's array still refers to it: unmapped with it
                pass
            self._map, self._views = None, ()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _make_region(nbytes: int) -> tuple[int, mmap.mmap, bytes] | None:
    """A worker's shared region for one link (memfd: no name, freed with its last user;
    pages are only allocated when written): fd, mapping, nonce; None where the system
    has no memfd (then every frame goes by the socket)."""
    size = ALIGN + 2 * -(-nbytes // ALIGN) * ALIGN
    try:
        fd = os.memfd_create("distnet-mesh", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # not Linux
        return None
    try:
        os.ftruncate(fd, size)
        region = mmap.mmap(fd, size)
    except OSError:
        os.close(fd)
        return None
    nonce = secrets.token_bytes(16)
    region[:16] = nonce
    return fd, region, nonce


def _map_offer(pid: int, fd: int, size: int, nonce: bytes) -> mmap.mmap | None:
    """The worker's region of an offer, if it is on this machine (its nonce is there)."""
    if size <= ALIGN:
        return None
    try:
        handle = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR)
    except OSError:
        return None  # another machine, or no access: frames go by the socket
    try:
        if os.fstat(handle).st_size != size:
            return None
        region = mmap.mmap(handle, size)
    except OSError:
        return None
    finally:
        os.close(handle)
    if not hmac.compare_digest(bytes(region[:16]), nonce):
        region.close()
        return None
    return region


class _End:
    """One actor's connections of the current mesh generation (-1: none)."""

    def __init__(self):
        self.conns: list[Link] = []
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
        conns: list[Link | None] = [None] * workers
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
                try:
                    pid, fd, size, nonce = OFFER.unpack(_recv_exact(conn, OFFER.size))
                except (OSError, MeshError):
                    conn.close()
                    continue
                if conns[index] is not None:
                    conns[index].close()
                conns[index] = link = Link(_configure(conn))
                region = _map_offer(pid, fd, size, nonce)
                if region is not None:
                    link.share(region, server_end=True)
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

    def connect(
        self,
        generation: int,
        token: bytes,
        index: int,
        addresses: list,
        shared_bytes: list[int] | None = None,
    ) -> None:
        """Connect to each server at addresses[k], offering a shared region of
        shared_bytes[k] per direction (None or 0: none, every frame by the socket)."""
        self.close()
        try:
            for k, (ip, port) in enumerate(addresses):
                conn = socket.create_connection((ip, port), timeout=CONNECT_TIMEOUT_S)
                link = Link(_configure(conn))
                self.conns.append(link)
                offer = OFFER.pack(0, 0, 0, bytes(16))
                made = _make_region(shared_bytes[k]) if shared_bytes and shared_bytes[k] else None
                if made is not None:
                    fd, region, nonce = made
                    link.share(region, server_end=False, fd=fd)
                    offer = OFFER.pack(os.getpid(), fd, len(region), nonce)
                conn.sendall(HELLO.pack(token, index) + offer)
        except OSError as err:
            self.close()
            raise MeshError(f"could not connect to a parameter server: {err}") from err
        self.generation = generation
