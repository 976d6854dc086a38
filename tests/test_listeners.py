"""Everything a test starts listens on loopback only: the local Ray that tests and `distnet
train` start with ray.init() (here), and every process of a multi-node test cluster
(test_multinode.py, on its cluster). listening.py reads the sockets.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from listening import exposed, listeners, namespace_addresses
from raycluster import _descendants


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
