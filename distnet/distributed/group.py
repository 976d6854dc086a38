"""The actors of one run: K parameter servers, N gradient workers, and the refs between them.

A synchronous step travels one of two ways (plan.sync_transport). "mesh" (the default):
one small `mesh_steps` call per actor for one step (or train.steps_per_call of them),
queued one call ahead, while the parameters and gradients go between the actors (mesh.py:
TCP, or shared memory on one machine); the driver reads only the reports.
"tasks": N `compute_gradients` calls and K `apply_gradients` calls whose arguments are
ObjectRefs: parameters go into the object store once per server per step and the workers
read them zero-copy. Both make the same computations in the same order. With b backup
workers there are N + b worker actors (see backup.py); async and SSP modes submit one
worker's `compute` and `apply` at a time (see async_loop.py); both use tasks.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

import numpy as np
import ray
from ray import exceptions as rex

from distnet.config import JobConfig
from distnet.distributed import mesh
from distnet.distributed.interrupts import uninterrupted
from distnet.distributed.plan import actor_batch_sizes, sync_transport
from distnet.distributed.runtime import remote_class
from distnet.distributed.server import (
    ModelState,
    ParameterServer,
    ShardState,
    shard_bounds,
)
from distnet.distributed.worker import GradientWorker
from distnet.errors import DistnetError

ALIVE_TIMEOUT_S = 120.0  # for a dead actor to be restarted before a restore
MESH_SETUP_TIMEOUT_S = 2 * mesh.CONNECT_TIMEOUT_S  # listen, then connect (a restarted actor)


@dataclass
class StepRefs:
    """The still-running results of one step that the driver reads (one step later)."""

    step: int
    worker_reports: list
    server_reports: list
    workers: list[int] = field(default_factory=list)  # whose gradients the step applies
    dropped: int = 0  # late gradients left out (backup workers)
    read: tuple[list, list] | None = None  # what fetch returned
    # Of a mesh call (train.steps_per_call steps or fewer): which of its steps this is, and
    # how many it has; the refs are then the call's, each a list of reports.
    index: int | None = None
    of: int = 1

    def fetch(self, timeout: float | None = None) -> tuple[list, list]:
        """Wait for the step (at most `timeout` s): (WorkerReports, ServerReports)."""
        if self.read is None:  # one ray.get for all: one wait, one round of the core worker
            got = ray.get(self.worker_reports + self.server_reports, timeout=timeout)
            if self.index is not None:
                got = [reports[self.index] for reports in got]
            self.read = (got[: len(self.worker_reports)], got[len(self.worker_reports) :])
        return self.read


class ActorGroup:
    """The actors of one run (worker 0 sleeping `worker_delay_s` per step, see hooks.py)."""

    def __init__(
        self, job: JobConfig, param_size: int, bn_size: int, schedule, worker_delay_s: float = 0.0
    ):
        train = job.train
        self.job = job
        self.has_bn = bn_size > 0
        self.bounds = shard_bounds(param_size, train.servers)
        self.weights = [float(b) for b in actor_batch_sizes(train)]
        self.shares = [w / train.batch_size for w in self.weights]  # async: b_i / B
        server_cls = remote_class(ParameterServer, num_cpus=0, retry_tasks=False)
        self.servers = [
            server_cls.options(**self._server_options()).remote(
                k,
                job.optim.update_rule,
                job.optim.rule_config(),
                schedule,
                train.server_threads,
                train.update == "overlapped",
            )
            for k in range(train.servers)
        ]
        self.workers = self._start_workers(worker_delay_s)
        try:  # all started, their train shards opened and checked
            ray.get([w.num_rows.remote() for w in self.workers])
        except BaseException as err:  # a failed start (a killed actor too) leaves none behind
            self.kill()
            if isinstance(err, rex.RayTaskError) and isinstance(err.cause, DistnetError):
                raise err.cause from None  # a bad shard: one line naming it
            raise
        self._param_refs: list = []
        self._bn_ref = None
        self.uses_mesh = sync_transport(train) == "mesh"
        self.mesh_generation = 0  # of the connected mesh; 0: none connected
        self._meshes = 0  # meshes connected so far
        self._refs_stale = False  # mesh steps moved the servers past param_refs

    def _server_options(self) -> dict:
        return {}

    def _start_workers(self, worker_delay_s: float) -> list:
        """One worker actor per global-batch share (Ray restarts a dead one)."""
        worker_cls = remote_class(
            GradientWorker, num_cpus=self.job.train.worker_cpus, retry_tasks=True
        )
        return [
            worker_cls.options(scheduling_strategy="SPREAD").remote(
                self.job,
                i,
                len(self.weights),
                int(b),
                self.bounds,
                worker_delay_s if i == 0 else 0.0,
            )
            for i, b in enumerate(self.weights)
        ]

    def load(self, state: ModelState) -> None:
        """Put `state` into the servers (at start, on resume, after a server restart)."""
        self._wait_alive()
        refs = []
        for k, ((a, b), server) in enumerate(zip(self.bounds, self.servers, strict=True)):
            opt = {
                key: v[a:b] if _is_sliced(v, state.params) else v
                for key, v in state.opt_state.items()
            }
            bn = state.bn_state if k == 0 and self.has_bn else None
            lagged = None if state.lagged is None else state.lagged[a:b]
            refs.append(
                server.load.remote(
                    ShardState(
                        state.step, state.params[a:b], opt, bn, list(state.worker_steps), lagged
                    )
                )
            )
        ray.get(refs)  # surface a failing server here, not in the first step
        self.param_refs = refs
        self.bn_ref = ray.put(state.bn_state) if self.has_bn else None
        self._refs_stale = False
        self.mesh_generation = 0  # after a failure some actors are new: connect again

    def _wait_alive(self) -> None:
        """Until every actor answers (at most ALIVE_TIMEOUT_S): after a failure the mesh's
        peers see a dead actor (EOF) before Ray does, and a call sent to it then would fail
        too instead of reaching the actor Ray restarts."""
        deadline = time.monotonic() + ALIVE_TIMEOUT_S
        waiting = self.servers + self.workers
        while waiting:
            pings = [a.pid.remote() for a in waiting]
            left = max(0.0, deadline - time.monotonic())
            done, _ = ray.wait(pings, num_returns=len(pings), timeout=left)
            dead = []
            for actor, ping in zip(waiting, pings, strict=True):
                try:
                    if ping not in done:
                        raise rex.GetTimeoutError(f"an actor did not answer in {ALIVE_TIMEOUT_S} s")
                    ray.get(ping)
                except rex.RayActorError:
                    dead.append(actor)
            if dead and time.monotonic() >= deadline:
                raise rex.GetTimeoutError(
                    f"{len(dead)} actors still dead after {ALIVE_TIMEOUT_S} s"
                )
            waiting = dead
            if dead:
                time.sleep(0.2)

    def state(self, timeout: float | None = None) -> ModelState:
        """The servers' state in one piece (within `timeout` s); ValueError if their shards
        are not at one step (an update that reached only some of them)."""
        refs = [s.get_state.remote() for s in self.servers]
        shards: list[ShardState] = ray.get(refs, timeout=timeout)
        first = shards[0]
        if any((s.step, s.worker_steps) != (first.step, first.worker_steps) for s in shards):
            raise ValueError(
                f"the parameter servers are at different steps: {[s.step for s in shards]}"
            )
        opt = {
            key: np.concatenate([s.opt_state[key] for s in shards])
            if isinstance(value, np.ndarray)
            else value
            for key, value in first.opt_state.items()
        }
        params = np.concatenate([s.params for s in shards])
        bn = first.bn_state if self.has_bn else np.zeros(0, params.dtype)
        lagged = None if first.lagged is None else np.concatenate([s.lagged for s in shards])
        return ModelState(first.step, params, opt, bn, first.worker_steps, lagged)

    # --- the parameter and batchnorm refs that tasks read --------------------------------
    @property
    def param_refs(self) -> list:
        """Refs of the servers' parameter slices, as of the last submitted step."""
        if self._refs_stale:
            self._refresh_refs()
        return self._param_refs

    @param_refs.setter
    def param_refs(self, refs: list) -> None:
        self._param_refs = refs

    @property
    def bn_ref(self):
        if self._refs_stale:
            self._refresh_refs()
        return self._bn_ref

    @bn_ref.setter
    def bn_ref(self, ref) -> None:
        self._bn_ref = ref

    def _refresh_refs(self) -> None:
        """Point the refs at the servers' state after mesh steps (whose parameters do not
        pass through the object store); queued behind those steps on each server."""
        current = [s.current.options(num_returns=2).remote() for s in self.servers]
        self._param_refs = [params for params, _ in current]
        self._bn_ref = current[0][1] if self.has_bn else None
        self._refs_stale = False

    # --- the mesh transport ------------------------------------------------------------
    def connect_mesh(self) -> None:
        """Connect every worker to every server with a fresh random token (mesh.py);
        MeshError if that does not happen within MESH_SETUP_TIMEOUT_S."""
        self.mesh_generation = 0
        self._meshes += 1  # a stale call (a replayed step) never matches a newer mesh
        generation, token = self._meshes, secrets.token_bytes(mesh.TOKEN_BYTES)
        try:
            addresses = ray.get(
                [s.mesh_listen.remote() for s in self.servers], timeout=MESH_SETUP_TIMEOUT_S
            )
            accepts = [
                s.mesh_accept.remote(generation, token, len(self.workers)) for s in self.servers
            ]
            connects = [w.mesh_connect.remote(generation, token, addresses) for w in self.workers]
            ray.get(accepts + connects, timeout=MESH_SETUP_TIMEOUT_S)
        except rex.GetTimeoutError as err:
            raise mesh.MeshError(
                f"the actors did not connect their mesh in {MESH_SETUP_TIMEOUT_S:g} s"
            ) from err
        self.mesh_generation = generation

    def mesh_steps(self, steps: list[int], positions: list[tuple[int, int]]) -> list[StepRefs]:
        """Submit consecutive synchronous steps over the mesh (one or several: see
        train.steps_per_call) as one call per actor; returns at once, a StepRefs per step."""
        if not self.mesh_generation:
            self.connect_mesh()
        g = self.mesh_generation
        where = [(*position, step) for step, position in zip(steps, positions, strict=True)]
        with uninterrupted():  # a Ctrl-C between them would leave a server waiting on gradients
            servers = [s.mesh_steps.remote(g, steps, self.weights) for s in self.servers]
            workers = [w.mesh_steps.remote(g, where) for w in self.workers]
        self._refs_stale = True
        everyone = list(range(len(self.workers)))
        return [
            StepRefs(step, workers, servers, everyone, index=i, of=len(steps))
            for i, step in enumerate(steps)
        ]

    def kill(self) -> None:
        """End every actor of the group now (a group that failed to start)."""
        for actor in self.servers + self.workers:
            ray.kill(actor)

    def params(self) -> np.ndarray:
        return np.concatenate(ray.get(self.param_refs))

    def bn_state(self):
        return ray.get(self.bn_ref) if self.has_bn else None

    def step(self, step: int, epoch: int, step_in_epoch: int) -> StepRefs:
        """Submit one synchronous step on every worker; returns at once."""
        if self.uses_mesh:
            return self.mesh_steps([step], [(epoch, step_in_epoch)])[0]
        workers = list(range(len(self.workers)))
        outs = [self.compute(i, epoch, step_in_epoch) for i in workers]
        return self.update(step, workers, outs)

    def compute(self, worker: int, epoch: int, step_in_epoch: int) -> list:
        """Submit one gradient computation on the newest parameters: the refs of its
        gradient slices, then (with batchnorm) its statistics, then its WorkerReport."""
        returns = len(self.servers) + self.has_bn + 1
        return (
            self.workers[worker]
            .compute_gradients.options(num_returns=returns)
            .remote(epoch, step_in_epoch, self.bn_ref, *self.param_refs)
        )

    def update(self, step: int, workers: list[int], outs: list[list]) -> StepRefs:
        """Submit synchronous step `step` from the gradients `outs` of `workers`."""
        param_refs, server_reports = [], []
        for i in range(len(self.servers)):
            params, bn, report = self.apply_on(i, step, workers, outs)
            param_refs.append(params)
            server_reports.append(report)
            if bn is not None:
                self.bn_ref = bn
        self.param_refs = param_refs
        return StepRefs(step, [out[-1] for out in outs], server_reports, workers)

    def apply_on(self, server: int, step: int, workers: list[int], outs: list[list]) -> tuple:
        """Submit server `server`'s part of step `step` (gradients `outs` of `workers`, in
        that order): the refs of its parameters, batchnorm statistics (None) and report."""
        k = len(self.servers)
        weights = [self.weights[i] for i in workers]
        args = [out[server] for out in outs]
        with_bn = server == 0 and self.has_bn
        if with_bn:
            args += [out[k] for out in outs]
        res = (
            self.servers[server]
            .apply_gradients.options(num_returns=2 + with_bn)
            .remote(step, weights, *args)
        )
        return res[0], res[1] if with_bn else None, res[-1]

    def apply(self, worker: int, local_step: int, out: list) -> list:
        """Async/SSP: submit the update from one worker's gradient; returns the servers'
        report refs. Workers computing from now on read the parameters it produces."""
        k = len(self.servers)
        param_refs, server_reports = [], []
        for i, server in enumerate(self.servers):
            with_bn = i == 0 and self.has_bn
            args = [out[i], out[k]] if with_bn else [out[i]]
            res = server.apply_gradient.options(num_returns=2 + with_bn).remote(
                worker, local_step, self.shares[worker], *args
            )
            param_refs.append(res[0])
            server_reports.append(res[-1])
            if with_bn:
                self.bn_ref = res[1]
        self.param_refs = param_refs
        return server_reports

    def evaluate(self, split: str, epoch: int, max_samples: int | None = None) -> float:
        """Accuracy on `split`, each worker scoring its share (at most max_samples in all)."""
        per_worker = None if max_samples is None else -(-max_samples // len(self.workers))
        counts = ray.get(
            [
                w.evaluate.remote(split, per_worker, epoch, self.bn_ref, *self.param_refs)
                for w in self.workers
            ]
        )
        correct, total = map(sum, zip(*counts, strict=True))
        return correct / max(total, 1)

    def worker_pids(self) -> list[int]:
        return ray.get([w.pid.remote() for w in self.workers])

    def server_pids(self) -> list[int]:
        return ray.get([s.pid.remote() for s in self.servers])


def _is_sliced(value, params: np.ndarray) -> bool:
    """Optimizer state arrays shaped like the parameters are split with them."""
    return isinstance(value, np.ndarray) and value.shape == params.shape
