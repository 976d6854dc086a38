"""The embedded default: a local Ray that listens on 127.0.0.1 only, with token auth on."""

import os

import psutil


def test_local_ray_listens_on_loopback_only(ray_session):
    @ray_session.remote
    class Probe:
        def pid(self):
            return os.getpid()

    probes = [Probe.remote() for _ in range(2)]
    ray_session.get([p.pid.remote() for p in probes])  # actors running, so they listen too
    assert ray_session.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    me = psutil.Process()
    listening = [(p.name(), c.laddr.ip) for p in [me, *me.children(recursive=True)]
                 for c in _connections(p) if c.status == psutil.CONN_LISTEN]
    names = {name for name, _ in listening}
    assert {"gcs_server", "raylet"} <= names
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for _, ip in listening), listening


def test_token_authentication_stays_on(ray_session):
    assert os.environ.get("RAY_AUTH_MODE", "token") != "disabled"
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ  # `ray start` still works


def _connections(process):
    try:
        return process.net_connections(kind="inet")
    except psutil.Error:
        return []
