"""Which sockets processes listen on, and whether any is reachable beyond loopback.

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
from dataclasses import dataclass
from pathlib import Path

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
