"""The embedded default: a local Ray that listens on 127.0.0.1 only, with token auth on."""

import os

import psutil
import pytest


def test_local_ray_listens_on_loopback_only(ray_session):
    @ray_session.remote
    class Probe:
        def pid(self):
            return os.getpid()

    probes = [Probe.remote() for _ in range(2)]
    ray_session.get([p.pid.remote() for p in probes])  # actors running, so they listen too
    assert ray_session.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    me = psutil.Process()
    listening = [
        (p.name(), c.laddr.ip)
        for p in [me, *me.children(recursive=True)]
        for c in _connections(p)
        if c.status == psutil.CONN_LISTEN
    ]
    names = {name for name, _ in listening}
    assert {"gcs_server", "raylet"} <= names
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for _, ip in listening), listening


def test_the_local_ray_refuses_requests_without_its_token(ray_session):
    import grpc
    from ray._raylet import AuthenticationTokenLoader
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    gcs = ray_session.get_runtime_context().gcs_address
    with grpc.insecure_channel(gcs) as channel:
        nodes = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetAllNodeInfo
        request = gcs_service_pb2.GetAllNodeInfoRequest()
        for refused in ([], [("authorization", "Bearer not-the-token")]):
            with pytest.raises(grpc.RpcError) as info:
                nodes(request, timeout=30, metadata=refused)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        token = AuthenticationTokenLoader.instance().get_raw_token()
        reply = nodes(request, timeout=30, metadata=[("authorization", f"Bearer {token}")])
        assert len(reply.node_info_list) == 1


def test_starting_it_leaves_ray_start_able_to_form_clusters(ray_session):
    from ray._private import ray_constants

    # init_local_ray says "single node" only while Ray starts; left so, this process could
    # not start or join a cluster afterwards (the cluster tests run in it).
    assert ray_constants.ENABLE_RAY_CLUSTER


def _connections(process):
    try:
        return process.net_connections(kind="inet")
    except psutil.Error:
        return []
