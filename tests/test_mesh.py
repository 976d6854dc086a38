"""The mesh transport's sockets (distnet/distributed/mesh.py) on 127.0.0.1, without Ray:
the token handshake, raw frames straight into arrays, and every failure a MeshError at
once (a closed peer, a frame of another step or size) or within the timeout."""

import socket
import threading

import numpy as np
import pytest

from distnet.distributed import mesh


@pytest.fixture
def local_ip(monkeypatch):
    monkeypatch.setattr(mesh, "node_ip", lambda: "127.0.0.1")


def connected(workers: int = 2, token: bytes = b"t" * 16):
    """A server end and `workers` worker ends, connected (generation 1)."""
    server = mesh.ServerEnd()
    address = server.listen()
    assert address[0] == "127.0.0.1"
    accepting = threading.Thread(target=server.accept, args=(1, token, workers))
    accepting.start()
    ends = []
    for i in range(workers):
        end = mesh.WorkerEnd()
        end.connect(1, token, i, [address])
        ends.append(end)
    accepting.join(10)
    assert not accepting.is_alive()
    return server, ends


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
