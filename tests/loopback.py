"""A network namespace with nothing but loopback, for test clusters, and one port into it.

`ray start` listens on every interface whatever --node-ip-address says (gcs_server, raylet,
the dashboard agent on 0.0.0.0; Ray turns 127.0.0.1 into the machine's address). Started in
a namespace whose only interface is `lo`, "every interface" is loopback, and nothing of the
cluster is reachable from the network, nor from this machine's own loopback:

    with LoopbackNamespace() as netns:
        subprocess.Popen(netns.argv(["ray", "start", ...]))
        port = netns.forward(8265)  # 127.0.0.1:port here -> 127.0.0.1:8265 in there

`forward` is how the tests' clients (Jobs API, dashboard HTTP) reach the head: a process
that accepts on a socket made here, in this namespace, on 127.0.0.1, and connects in the
cluster's namespace (a socket belongs to the namespace it was created in).
As root the namespace is a plain network namespace; otherwise it is made inside a new user
namespace (`unshare --user --map-root-user`, where the kernel allows unprivileged ones) and
entered through both.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from typing import Self


class LoopbackNamespace:
    def __init__(self):
        # The namespace lives as long as this holder (and whatever entered it): `cat` ends
        # when its stdin closes, at close() or when the test process dies.
        as_user = os.geteuid() != 0
        self.holder = subprocess.Popen(
            [
                "unshare",
                *(["--user", "--map-root-user"] if as_user else []),
                "--net",
                "--",
                "sh",
                "-c",
                "ip link set lo up && echo up && exec cat",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        if self.holder.stdout.readline() != b"up\n":
            self.holder.wait()
            raise RuntimeError(
                "cannot create a network namespace with only loopback: "
                + self.holder.stderr.read().decode().strip()
            )
        self.path = f"/proc/{self.holder.pid}/ns/net"
        self._enter = [f"--net={self.path}"]
        if as_user:
            self._enter += [f"--user=/proc/{self.holder.pid}/ns/user", "--preserve-credentials"]
        self.forwarders: list[subprocess.Popen] = []

    def argv(self, command: list[str]) -> list[str]:
        """`command` run inside the namespace (nsenter execs it: same pid)."""
        return ["nsenter", *self._enter, "--", *command]

    def forward(self, port: int) -> int:
        """A port on this namespace's 127.0.0.1 whose connections go to 127.0.0.1:`port`
        inside; returns it."""
        listener = socket.create_server(("127.0.0.1", 0))
        forwarder = subprocess.Popen(
            self.argv([sys.executable, __file__, str(listener.fileno()), str(port)]),
            pass_fds=[listener.fileno()],
            start_new_session=True,
        )
        local_port = listener.getsockname()[1]
        listener.close()  # the forwarder holds it now
        self.forwarders.append(forwarder)
        return local_port

    def close(self) -> None:
        for process in [*self.forwarders, self.holder]:
            if process is self.holder:
                process.stdin.close()
            else:
                process.kill()
            process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def same_namespace(pid: int) -> bool:
    """Whether process `pid` shares this process's network namespace."""
    return os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _serve(fd: int, port: int) -> None:
    async def connect(client_reader, client_writer):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, writer), _pipe(reader, client_writer))

    listener = socket.socket(fileno=fd)
    server = await asyncio.start_server(connect, sock=listener)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":  # the forwarder: python loopback.py <listening fd> <port inside>
    asyncio.run(_serve(int(sys.argv[1]), int(sys.argv[2])))
