"""Connecting to Ray and starting distnet's actors: the only place that configures Ray.

The embedded default (no address, no RAY_ADDRESS) starts a local instance that listens on
127.0.0.1 only and is shut down when training ends; with an address it joins that cluster.
Token authentication is left exactly as Ray sets it up.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from distnet.distributed.interrupts import whole_shutdown
from distnet.errors import DistnetError


@contextmanager
def _single_node():
    """Ray on Linux turns a node address of 127.0.0.1 into the machine's network address
    (and then listens on every interface) unless it believes it runs single-node. A local
    instance *is* single-node: say so while it starts, and only in this process, so that
    `ray start` nodes launched later from here still form clusters."""
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def _is_local_single_node(address: str) -> bool:
    """A GCS address (host:port, not ray://) on this machine's 127.0.0.1."""
    return "://" not in address and address.rsplit(":", 1)[0] in ("127.0.0.1", "localhost")


def init_local_ray(num_cpus: int | None = None, **kwargs):
    """Start a Ray instance on this machine, reachable on 127.0.0.1 only (its dashboard
    too, with include_dashboard=True). Returns Ray's context (`.dashboard_url`)."""
    import ray

    with _single_node():
        return ray.init(
            num_cpus=num_cpus or os.cpu_count(),
            _node_ip_address="127.0.0.1",
            include_dashboard=kwargs.pop("include_dashboard", False),
            dashboard_host="127.0.0.1",
            logging_level=kwargs.pop("logging_level", "WARNING"),
            log_to_driver=kwargs.pop("log_to_driver", True),
            **kwargs,
        )


@contextmanager
def ray_session(address: str | None = None, num_cpus: int = 1, dashboard: bool = False):
    """Use the running Ray connection, join `address`/RAY_ADDRESS, or start a local one
    with at least `num_cpus` CPUs (more workers than cores share them); `dashboard` starts
    the local one's dashboard (on 127.0.0.1) and prints its address.

    Only an instance started here is shut down on exit.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if dashboard and address:
        raise DistnetError(
            f"a dashboard is started only with a local Ray; the cluster at "
            f"{address} serves its own (port 8265 of its head)"
        )
    try:
        if address and _is_local_single_node(address):
            # A driver joining an instance that init_local_ray started must also call
            # itself 127.0.0.1, or it looks for its raylet on the network address.
            with _single_node():
                ray.init(address=address, _node_ip_address="127.0.0.1", logging_level="WARNING")
        elif address:
            ray.init(address=address, logging_level="WARNING")
        else:
            context = init_local_ray(
                max(num_cpus, os.cpu_count() or 1), include_dashboard=dashboard
            )
            if dashboard:
                _announce_dashboard(context.dashboard_url)
    except (ConnectionError, ValueError, RuntimeError) as err:
        where = address or "a local Ray instance"
        raise DistnetError(f"could not connect to {where}: {str(err).splitlines()[0]}") from err
    try:
        yield
    finally:
        with whole_shutdown():  # a Ctrl-C that cut it could crash the exiting process
            ray.shutdown()


def _announce_dashboard(url: str) -> None:
    # Ray 2.60 protects the dashboard with its token unless RAY_AUTH_MODE=disabled.
    login = (
        ""
        if os.environ.get("RAY_AUTH_MODE") == "disabled"
        else "  (sign in with the token `ray get-auth-token` prints)"
    )
    print(f"Ray dashboard: http://{url}{login}", file=sys.stderr)


def remote_class(cls, *, num_cpus: float, retry_tasks: bool):
    """Wrap a plain class as a Ray actor class that Ray restarts when its process dies.

    `retry_tasks` replays a call that was running on the dead process on the new one: right
    for the workers, whose calls are pure functions of their arguments. The servers' calls
    are not retried: a restarted server has lost its state, the driver sees the failure
    and restores it from a checkpoint. Not retrying them also stops Ray from keeping the
    lineage of every step (params(t) <- grads(t) <- params(t-1) <- ...), a chain that grew
    with the run and overflowed the stack when it was finally released.
    """
    import ray

    return ray.remote(
        num_cpus=num_cpus, max_restarts=-1, max_task_retries=-1 if retry_tasks else 0
    )(cls)
