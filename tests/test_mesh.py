"""The mesh transport's sockets (distnet/distributed/mesh.py) on 127.0.0.1, without Ray:
the token handshake, raw frames straight into arrays, and every failure a MeshError at
once (a closed peer, a frame of another step or size) or within the timeout."""

import os
import socket
import threading

import numpy as np
import pytest

from distnet.distributed import mesh


@pytest.fixture
def local_ip(monkeypatch):
    monkeypatch.setattr(mesh, "node_ip", lambda: "127.0.0.1")


def connected(workers: int = 2, token: bytes = b"t" * 16, shared: int | None = None):
    """A server end and `workers` worker ends, connected (generation 1); `shared`: the
    bytes of each link's shared region (None: none)."""
    server = mesh.ServerEnd()
    address = server.listen()
    assert address[0] == "127.0.0.1"
    accepting = threading.Thread(target=server.accept, args=(1, token, workers))
    accepting.start()
    ends = []
    for i in range(workers):
        end = mesh.WorkerEnd()
        end.connect(1, token, i, [address], None if shared is None else [shared])
        ends.append(end)
    accepting.join(10)
    assert not accepting.is_alive()
    return server, ends


def next_header(link) -> tuple:
    """The next frame's header, read off the socket (its bytes are left unread)."""
    return mesh.HEADER.unpack(link.sock.recv(mesh.HEADER.size, socket.MSG_WAITALL))


def test_frames_go_both_ways_in_worker_order(local_ip):
    server, (w0, w1) = connected()
    params = np.arange(5, dtype=np.float32)
    for conn in server.conns:
        mesh.send_array(conn, 3, params)
    into = np.zeros(5, np.float32)
    mesh.recv_array(w1.conns[0], 3, np.float32, 5, out=into)
    np.testing.assert_array_equal(into, params)
    mesh.send_array(w1.conns[0], 3, np.full(2, 7, np.int32))
    got = mesh.recv_any(server.conns[1], 3)
    assert got.dtype == np.int32 and got.tolist() == [7, 7]
    server.check(1)
    with pytest.raises(mesh.MeshError, match="generation 2"):
        w0.check(2)


def test_a_wrong_token_is_not_a_worker(local_ip, monkeypatch):
    monkeypatch.setattr(mesh, "CONNECT_TIMEOUT_S", 1.0)
    server = mesh.ServerEnd()
    address = server.listen()
    intruder = socket.create_connection(address)
    intruder.sendall(mesh.HELLO.pack(b"x" * 16, 0))
    with pytest.raises(mesh.MeshError, match="did not connect in 1 s"):
        server.accept(1, b"t" * 16, 1)
    assert intruder.recv(1) == b""  # closed on it
    assert not server.conns


def test_a_frame_of_another_step_or_size_and_a_closed_peer_are_errors(local_ip):
    server, (w0, w1) = connected()
    mesh.send_array(server.conns[0], 4, np.zeros(3, np.float32))
    with pytest.raises(mesh.MeshError, match="step 4, expected 5"):
        mesh.recv_array(w0.conns[0], 5, np.float32, 3)
    mesh.send_array(server.conns[1], 5, np.zeros(3, np.float32))
    with pytest.raises(mesh.MeshError, match="3 x float32, expected 4"):
        mesh.recv_array(w1.conns[0], 5, np.float32, 4)
    server.close()
    with pytest.raises(mesh.MeshError, match="closed"):
        mesh.recv_array(w0.conns[0], 5, np.float32, 3)


def test_a_silent_peer_is_a_timeout(local_ip, monkeypatch):
    monkeypatch.setattr(mesh, "RECV_TIMEOUT_S", 0.2)
    server, (w0,) = connected(workers=1)
    with pytest.raises(mesh.MeshError, match="nothing for 0.2 s"):
        mesh.recv_array(w0.conns[0], 0, np.float32, 3)


def test_frames_between_ends_on_one_machine_go_through_shared_memory(local_ip):
    server, (w0, w1) = connected(shared=64 * 4 + 2 * mesh.ALIGN)
    params, stats = np.arange(40, dtype=np.float32), np.ones(3)
    for step in (1, 2):  # a step's frames one after another; the next step starts over
        for link in server.conns:
            mesh.send_array(link, step, params + step)
            mesh.send_array(link, step, stats * step)
        into = np.zeros(40, np.float32)
        for w in (w0, w1):
            mesh.recv_array(w.conns[0], step, np.float32, 40, out=into)
            np.testing.assert_array_equal(into, params + step)
            np.testing.assert_array_equal(mesh.recv_any(w.conns[0], step), stats * step)
            mesh.send_array(w.conns[0], step, into * 2)  # the worker shares once the server did
            mesh.send_array(w.conns[0], step, np.arange(100, dtype=np.int32))  # too big: TCP
        for link in server.conns:
            borrowed = mesh.recv_any(link, step, borrow=True)  # a view of the region
            np.testing.assert_array_equal(borrowed, (params + step) * 2)
            assert not borrowed.flags.writeable and not borrowed.flags.owndata
            assert mesh.recv_any(link, step, borrow=True).tolist() == list(range(100))
    mesh.send_array(server.conns[0], 3, params)
    *_, code, count = next_header(w0.conns[0])
    assert code == mesh.SHARED | mesh.CODES[np.dtype(np.float32)] and count == 40
    mesh.send_array(w1.conns[0], 3, params)  # only the header went by the socket
    mesh.send_array(w1.conns[0], 3, np.zeros(1000, np.float32))
    assert next_header(server.conns[1])[2] & mesh.SHARED
    assert mesh.HEADER.unpack(server.conns[1].sock.recv(mesh.HEADER.size))[2] == 0
    server.close()
    for w in (w0, w1):
        w.close()


def test_without_an_offer_or_with_a_wrong_nonce_frames_go_by_the_socket(local_ip):
    server, (w0,) = connected(workers=1)
    mesh.send_array(server.conns[0], 0, np.ones(4, np.float32))
    assert next_header(w0.conns[0])[2] == mesh.CODES[np.dtype(np.float32)]
    # An offer of a region whose nonce is not the one offered (as another machine's
    # process of the same pid and fd would be) is not mapped.
    server = mesh.ServerEnd()
    address = server.listen()
    accepting = threading.Thread(target=server.accept, args=(1, b"t" * 16, 1))
    accepting.start()
    fd, region, _ = mesh._make_region(1024)
    conn = socket.create_connection(address)
    offer = mesh.OFFER.pack(os.getpid(), fd, len(region), b"n" * 16)
    conn.sendall(mesh.HELLO.pack(b"t" * 16, 0) + offer)
    accepting.join(10)
    assert not accepting.is_alive() and server.conns[0].place_out(0, 4) is None
    mesh.send_array(server.conns[0], 0, np.ones(4, np.float32))
    assert mesh.HEADER.unpack(conn.recv(mesh.HEADER.size, socket.MSG_WAITALL))[2] == 0
    server.close()
    conn.close()
    region.close()
    os.close(fd)
