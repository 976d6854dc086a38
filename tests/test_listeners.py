"""Everything a test starts listens on loopback only: the local Ray that tests and `distnet
train` start with ray.init(), and every process of a multi-node test cluster (raycluster.py).

A listening socket is private when it is bound to a loopback address, or to the wildcard
(0.0.0.0, ::) in a network namespace whose only addresses are loopback ones (raycluster's
nodes, see loopback.py). Sockets are read from /proc/<pid>/net/{tcp,tcp6,udp,udp6}, which
show the namespace of that process (psutil and `ss` show only their own), and from this
process's: a socket belongs to the namespace it was made in, which a process holding it
may have left (the forwarder into a test cluster).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from loopback import same_namespace
from raycluster import _descendants, ray_cluster

WILDCARDS = {ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::")}
_LISTENING = {"tcp": "0A", "tcp6": "0A", "udp": "07", "udp6": "07"}  # LISTEN / unconnected


@dataclass(frozen=True)
class Listener:
    pid: int
    command: str
    netns_pid: int  # a process in the namespace the socket belongs to
    protocol: str
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int

    def __str__(self) -> str:
        return f"{self.command}[{self.pid}] {self.protocol} {self.ip}:{self.port}"


def _parse_address(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """/proc/net/tcp's "0100007F:1F90": the address as 32-bit words in host (little-endian)
    order, the port in hex."""
    address, port = text.split(":")
    raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip, int(port, 16)


def listeners(pid: int) -> list[Listener]:
    """The listening TCP sockets and unconnected UDP sockets that process `pid` holds."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        command = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:  # ended meanwhile
        return []
    inodes = set()
    for fd in fds:
        try:
            inodes.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # closed meanwhile (such as the one that listed them)
            pass
    found = []
    for netns_pid in {pid, os.getpid()}:
        for protocol, state in _LISTENING.items():
            try:
                lines = Path(f"/proc/{netns_pid}/net/{protocol}").read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if fields[3] == state and f"socket:[{fields[9]}]" in inodes:
                    found.append(
                        Listener(pid, command, netns_pid, protocol, *_parse_address(fields[1]))
                    )
    return sorted(set(found), key=str)


def namespace_addresses(pid: int) -> set:
    """Every local address of process `pid`'s network namespace: IPv4 from the routing
    trie (an address line, then "/32 host LOCAL"), IPv6 from if_inet6. Read from /proc, so
    that no privilege is needed to look into another namespace."""
    found, last = set(), None
    for line in Path(f"/proc/{pid}/net/fib_trie").read_text().splitlines():
        if line.strip().startswith("|--"):
            last = line.split()[-1]
        elif line.strip() == "/32 host LOCAL":
            found.add(ipaddress.ip_address(last))
    inet6 = Path(f"/proc/{pid}/net/if_inet6")
    for line in inet6.read_text().splitlines() if inet6.exists() else []:
        found.add(ipaddress.ip_address(bytes.fromhex(line.split()[0])))
    return found


def exposed(pids: list[int]) -> list[str]:
    """The sockets of `pids` reachable on some address that is not loopback."""
    bad = []
    for pid in pids:
        for listener in listeners(pid):
            reachable = (
                namespace_addresses(listener.netns_pid)
                if listener.ip in WILDCARDS
                else {listener.ip}
            )
            outside = sorted(str(ip) for ip in reachable if not ip.is_loopback)
            if outside:
                bad.append(f"{listener} (reachable on {', '.join(outside)})")
    return bad


def test_the_check_sees_a_socket_open_to_the_network():
    """The check itself can fail: a wildcard socket here is reachable on this machine's
    network address (this namespace has one), a loopback socket is not."""
    if not [ip for ip in namespace_addresses(os.getpid()) if not ip.is_loopback]:
        pytest.fail("this machine has no network address to test the check with")
    with (
        socket.create_server(("0.0.0.0", 0)) as public,
        socket.create_server(("127.0.0.1", 0)) as private,
    ):
        found = {(lst.ip, lst.port) for lst in listeners(os.getpid())}
        assert (ipaddress.ip_address("0.0.0.0"), public.getsockname()[1]) in found
        assert (ipaddress.ip_address("127.0.0.1"), private.getsockname()[1]) in found
        bad = exposed([os.getpid()])
        assert any(f":{public.getsockname()[1]} (reachable on" in line for line in bad), bad
        assert not any(f":{private.getsockname()[1]} " in line for line in bad), bad


# The Ray that `distnet train` starts without an address (runtime.init_local_ray), with the
# dashboard on as well, an actor and a task running: then its tree of processes.
LOCAL_RAY = textwrap.dedent("""
    import sys, ray
    from distnet.distributed.runtime import init_local_ray
    init_local_ray(num_cpus=1, include_dashboard=True, log_to_driver=False)

    @ray.remote
    class Echo:
        def ping(self):
            return 1

    echo = Echo.remote()
    ray.get([echo.ping.remote(), ray.remote(lambda: 2).remote()])
    print("ready", flush=True)
    sys.stdin.read()
    ray.shutdown()
""")


def test_local_ray_listens_on_loopback_only():
    driver = subprocess.Popen(
        [sys.executable, "-c", LOCAL_RAY], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert driver.stdout.readline() == "ready\n"
        pids = [driver.pid, *_descendants(driver.pid)]
        commands = {
            Path(f"/proc/{pid}/comm").read_text().strip()
            for pid in pids
            if Path(f"/proc/{pid}/comm").exists()
        }
        assert {"gcs_server", "raylet"} <= commands, commands
        sockets = [lst for pid in pids for lst in listeners(pid)]
        assert len(sockets) >= 5, sockets  # gcs, raylet, agents, dashboard, workers
        assert exposed(pids) == []
    finally:
        driver.stdin.close()
        driver.wait(timeout=120)


def test_the_session_ray_of_the_tests_listens_on_loopback_only(ray_session):
    ray_session.get(ray_session.remote(lambda: 1).remote())
    pids = [os.getpid(), *_descendants(os.getpid())]
    assert [lst for pid in pids for lst in listeners(pid) if lst.command == "gcs_server"]
    assert exposed(pids) == []


def test_a_test_cluster_listens_on_loopback_only():
    with ray_cluster(workers=1) as cluster:
        assert len(cluster.node_ids()) == 2  # the clients here reach it, with the token
        pids = [pid for node in cluster.nodes for pid in node.service.processes()]
        assert not any(same_namespace(pid) for pid in pids)
        commands = {lst.command for pid in pids for lst in listeners(pid)}
        assert {"gcs_server", "raylet"} <= commands, commands
        assert exposed(pids) == []
        # ... and what the tests reach it through: a forwarder on 127.0.0.1 here.
        forwarders = [
            pid for proc in cluster.netns.forwarders for pid in [proc.pid, *_descendants(proc.pid)]
        ]
        assert [str(lst.ip) for pid in forwarders for lst in listeners(pid)] == ["127.0.0.1"]
        assert exposed(forwarders) == []
        # Token authentication is still on behind the forwarder.
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(cluster.dashboard_url + "/api/v0/nodes", timeout=30)
        assert refused.value.code in (401, 403)
