"""The parameter server: plain numpy state that a thin Ray actor wraps.

With K servers the flat parameter vector is cut into K contiguous slices
(`shard_bounds`); server k owns slice k, its optimizer state and nothing else. Because
every update rule is elementwise, K slices updated independently give exactly the update
of the whole vector. Server 0 also keeps the one averaged copy of the batchnorm running
statistics.

Synchronous mode calls `apply_gradients` once per step with every worker's gradient;
async and SSP modes call `apply_gradient` once per worker step (see async_loop.py).
Gradients may arrive compressed (compression.py); the server decodes them.

With `overlapped = True` (train.update = "overlapped", docs/overlap.md) the mesh step is
the delayed parameter update: the workers compute step t's gradient on p(t) = θ_{t-1}
(p(0) = θ_0), the lagged copy each shard keeps, and the server sends θ_t to them (from a
thread, while its main thread applies step t's update) before updating.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from distnet import optim
from distnet.distributed import mesh
from distnet.distributed.compression import Sparse, decode
from distnet.errors import DistnetError
from distnet.fpenv import flush_denormals


class StaleServerError(DistnetError):
    """The server is not at the step the driver expects (it was restarted): restore it."""


def shard_bounds(size: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous, balanced [start, stop) slices of a vector of `size` elements."""
    edges = [size * k // num_shards for k in range(num_shards + 1)]
    return list(pairwise(edges))


@dataclass
class ShardState:
    """Everything a server shard needs to continue: what a checkpoint stores per slice."""

    step: int
    params: np.ndarray
    opt_state: dict = field(default_factory=dict)  # per-rule arrays/scalars (m, v, t, ...)
    bn_state: np.ndarray | None = None  # server 0 only
    # async/SSP: the next local step of each worker to apply, i.e. how many it has applied
    worker_steps: list[int] = field(default_factory=list)
    # overlapped update: the parameters the workers compute the next step on (p(step))
    lagged: np.ndarray | None = None


@dataclass
class ModelState:
    """The whole flat state that the servers hold, gathered in one place (the
    driver's view; each server holds a ShardState of it)."""

    step: int
    params: np.ndarray
    opt_state: dict
    bn_state: np.ndarray
    worker_steps: list[int] = field(default_factory=list)  # async/SSP: applied per worker
    lagged: np.ndarray | None = None  # overlapped update: p(step), see ShardState


@dataclass
class ServerReport:
    """What one update cost and did; the driver logs it."""

    step: int
    learning_rate: float
    grad_sq_norm: float
    update_s: float
    received: int = 0  # gradients applied (backup workers may drop late ones)
    started: float = 0.0  # time.time() when the update began (for the --trace timeline)


class ParameterServer:
    """Holds one slice of the flat parameters and applies the update rule to it."""

    def __init__(
        self,
        shard_index: int,
        update_rule: str,
        rule_config: dict,
        schedule,
        threads: int = 1,
        overlapped: bool = False,
    ):
        if update_rule not in optim.RULES:
            raise DistnetError(f"unknown update rule {update_rule!r}")
        self.shard_index = shard_index
        self.rule = optim.RULES[update_rule]
        self.rule_config = dict(rule_config)
        self.schedule = schedule
        self.mesh = mesh.ServerEnd()  # the mesh transport's connections, once connected
        self.overlapped = overlapped
        self._sender: _Sender | None = None  # overlapped: the send of p(t+1) under way
        self.state: ShardState | None = None  # None until the driver loads a state
        optim.set_num_threads(threads or min(os.cpu_count() or 1, 4))

    def pid(self) -> int:
        return os.getpid()

    def load(self, state: ShardState) -> np.ndarray:
        """(Re)start from `state`; returns the parameters so workers can read them."""
        config = dict(self.rule_config)
        config.update({k: _own(v) for k, v in state.opt_state.items()})
        self.config = config
        self._stop_sending()
        params = _own(state.params)
        lagged = None
        if self.overlapped:  # a fresh run (or a sync checkpoint) starts with p(step) = θ
            lagged = np.array(params if state.lagged is None else state.lagged)
        self.state = ShardState(
            state.step, params, {}, _own(state.bn_state), list(state.worker_steps), lagged
        )
        return self.state.params

    def get_state(self) -> ShardState:
        self._check_loaded()
        opt_state = {k: v for k, v in self.config.items() if k not in self.rule_config}
        return ShardState(
            self.state.step,
            self.state.params,
            opt_state,
            self.state.bn_state,
            list(self.state.worker_steps),
            self.state.lagged,
        )

    def apply_gradients(self, step: int, weights: list[float], *grads_and_bn):
        """One synchronous update from the sample-weighted average of the workers' grads.

        `grads_and_bn` holds one gradient slice per worker, then (server 0 with batchnorm)
        one batchnorm-statistics vector per worker. Returns the new parameters, then the new
        batchnorm statistics (if any), then a ServerReport.
        """
        self._check_step(step)
        start, started = time.perf_counter(), time.time()
        flush_denormals()  # per call: MXCSR is per thread, and Ray may call from any thread
        n = len(weights)
        bn_states = grads_and_bn[n:]
        grads = [decode(g, self.state.params.dtype) for g in grads_and_bn[:n]]
        mean = optim.Mean(grads, weights)  # made block by block inside the rule
        self.config["learning_rate"] = self.schedule(step)
        params, self.config = self.rule(self.state.params, mean, self.config)
        self.state.params = params
        if bn_states:
            self.state.bn_state = _mean(bn_states, weights)
        self.state.step += 1
        report = ServerReport(
            step=step,
            learning_rate=float(self.config["learning_rate"]),
            grad_sq_norm=mean.sq_norm,
            update_s=time.perf_counter() - start,
            received=n,
            started=started,
        )
        if bn_states:
            return params, self.state.bn_state, report
        return params, report

    def current(self) -> tuple:
        """The parameters and batchnorm statistics (None without) as they are now."""
        self._check_loaded()
        return self.state.params, self.state.bn_state

    # --- the mesh transport (mesh.py) ------------------------------------------------
    def mesh_listen(self) -> tuple[str, int]:
        """Listen for the workers of a new mesh; (ip, port) to connect to."""
        self._stop_sending()
        return self.mesh.listen()

    def mesh_accept(self, generation: int, token: bytes, workers: int) -> None:
        self.mesh.accept(generation, token, workers)

    def mesh_step(self, generation: int, step: int, weights: list[float]) -> ServerReport:
        """One synchronous step over the mesh: send the parameters (and batchnorm
        statistics) to every worker, receive each one's gradient slice (and statistics) in
        worker order, then `apply_gradients` exactly as the task path calls it. Any failure
        closes the mesh, so that the workers fail at once too."""
        self.mesh.check(generation)
        if self.overlapped:
            return self._overlapped_step(generation, step, weights)
        try:
            self._check_step(step)
            s, k = self.state, self.shard_index
            with_bn = k == 0 and s.bn_state is not None
            for conn in self.mesh.conns:
                mesh.send_array(conn, step, s.params)
                if with_bn:
                    mesh.send_array(conn, step, s.bn_state)
            grads, bn_states = [], []
            for conn in self.mesh.conns:  # borrowed: used up before the next step's send
                grads.append(_recv_payload(conn, step, s.params.size, borrow=True))
                if with_bn:
                    bn_states.append(mesh.recv_array(conn, step, s.bn_state.dtype, s.bn_state.size))
            return self.apply_gradients(step, weights, *grads, *bn_states)[-1]
        except BaseException:
            self.mesh.close()
            raise

    def mesh_steps(self, generation: int, steps: list[int], weights: list[float]) -> list:
        """`mesh_step` of each of `steps`, in order: their reports."""
        return [self.mesh_step(generation, step, weights) for step in steps]

    def _overlapped_step(self, generation: int, step: int, weights: list[float]):
        """The delayed parameter update's mesh step t: the workers get p(t) (sent by the
        previous step's thread, or now, on a new mesh), their gradients and statistics come
        back, the statistics are averaged as `apply_gradients` does, θ_t is kept as
        p(t+1) and sent by a thread while this one applies the update."""
        try:
            self._check_step(step)
            s, k = self.state, self.shard_index
            with_bn = k == 0 and s.bn_state is not None
            sender = self._sender
            if sender is None:  # a new mesh (a start, resume or recovery): p(step) now
                _send_params(self.mesh.conns, step, s.lagged, s.bn_state if with_bn else None)
            elif sender.target == (generation, step):
                sender.finish()  # p(step) sent (or being read): raises if its send failed
            else:
                raise mesh.MeshError(f"a send ahead for {sender.target}, not {step}")
            grads, bn_states = [], []
            for conn in self.mesh.conns:
                grads.append(_recv_payload(conn, step, s.params.size))
                if with_bn:
                    bn_states.append(mesh.recv_array(conn, step, s.bn_state.dtype, s.bn_state.size))
            if bn_states:  # as in sync mode: the statistics do not lag
                s.bn_state = _mean(bn_states, weights)
            np.copyto(s.lagged, s.params)  # p(step + 1) = θ_step, before the update
            self._sender = _Sender(
                (generation, step + 1), self.mesh.conns, s.lagged, s.bn_state if with_bn else None
            )
            return self.apply_gradients(step, weights, *grads)[-1]
        except BaseException:
            self._stop_sending()
            self.mesh.close()
            raise

    def _stop_sending(self) -> None:
        """End a send under way (its workers never came to read it: the run ended, or the
        mesh is replaced): shutting the sockets down wakes a blocked sendall."""
        sender, self._sender = self._sender, None
        if sender is not None and sender.is_alive():
            for link in self.mesh.conns:
                link.shutdown()
            sender.join(timeout=mesh.RECV_TIMEOUT_S)
            self.mesh.close()

    def apply_gradient(self, worker: int, local_step: int, weight: float, grad, bn_state=None):
        """Async/SSP: apply one worker's gradient at once (Hogwild-style parameter server).

        The update uses the learning rate times `weight` = the worker's share of the global
        batch (b_i / B), so N such updates move the parameters about as far as one
        synchronous step, for every update rule (scaling the gradient instead would not
        shrink Adam's or RMSProp's steps). The schedule runs on synchronous-equivalent
        steps: applied gradients // N. A worker's batchnorm statistics replace the
        server's copy. A (worker, local_step) that was applied already is refused, so a
        replayed call never counts twice; a skipped local step is an error.
        Returns the parameters, then the batchnorm statistics (if given), then a
        ServerReport whose `received` is 1, or 0 for a refused duplicate.
        """
        self._check_loaded()
        s = self.state
        expected = s.worker_steps[worker]
        if local_step > expected:
            raise DistnetError(
                f"parameter server {self.shard_index}: gradient {expected} of "
                f"worker {worker} was never applied, got {local_step}"
            )
        start, started = time.perf_counter(), time.time()
        flush_denormals()
        grad = decode(grad, s.params.dtype)
        lr = self.schedule(s.step // len(s.worker_steps))
        applied = local_step == expected
        if applied:
            self.config["learning_rate"] = lr * weight
            s.params, self.config = self.rule(s.params, grad, self.config)
            if bn_state is not None:
                s.bn_state = _own(bn_state)
            s.step += 1
            s.worker_steps[worker] += 1
        report = ServerReport(
            step=s.step,
            learning_rate=lr,
            grad_sq_norm=float(np.dot(grad, grad)),
            update_s=time.perf_counter() - start,
            received=int(applied),
            started=started,
        )
        if bn_state is not None:
            return s.params, s.bn_state, report
        return s.params, report

    def _check_loaded(self):
        if self.state is None:
            raise StaleServerError(f"parameter server {self.shard_index} holds no state")

    def _check_step(self, step: int):
        self._check_loaded()
        if self.state.step != step:
            raise StaleServerError(
                f"parameter server {self.shard_index} is at step {self.state.step}, not {step}"
            )


class _Sender(threading.Thread):
    """Sends p(t+1) (and the statistics) of mesh step t to every worker while the server
    applies step t's update: sendall and numpy's elementwise loops release the GIL. The
    workers read it at once, since the driver queues their next call one step ahead; at
    a boundary (evaluation, checkpoint) it waits in the socket until their next step."""

    def __init__(self, target: tuple[int, int], conns, params, bn_state):
        super().__init__(daemon=True, name="distnet-send-ahead")
        self.target = target  # (mesh generation, step) whose parameters this sends
        self.error: BaseException | None = None
        self._args = (conns, target[1], params, bn_state)
        self.start()

    def run(self) -> None:
        try:
            _send_params(*self._args)
        except BaseException as err:  # raised by join() in the step that needs it
            self.error = err

    def finish(self) -> None:
        """Wait for the send to end (bounded: every socket wait is); raise its error."""
        self.join()
        if self.error is not None:
            raise self.error


def _send_params(conns, step: int, params: np.ndarray, bn_state) -> None:
    for conn in conns:
        mesh.send_array(conn, step, params)
        if bn_state is not None:
            mesh.send_array(conn, step, bn_state)


def _recv_payload(conn, step: int, size: int, borrow: bool = False):
    """A worker's gradient slice as it was encoded: dense (float32/16/64), or top-k's int32
    indices then float32 values (compression.py); `borrow` as in mesh.recv_any."""
    first = mesh.recv_any(conn, step, borrow)
    if first.dtype == np.int32:
        values = mesh.recv_array(conn, step, np.float32, first.size)
        if first.size and (first.min() < 0 or first.max() >= size):
            raise mesh.MeshError("a sparse gradient index out of range")
        return Sparse(first, values, size)
    if first.size != size:
        raise mesh.MeshError(f"a gradient slice of {first.size} elements, expected {size}")
    return first


def _own(value):
    """A writable copy of arrays that arrive read-only from the object store."""
    return np.array(value) if isinstance(value, np.ndarray) else value


def _mean(vectors, weights) -> np.ndarray:
    """The sample-weighted mean of the workers' batchnorm statistics, as one array."""
    return optim.Mean(vectors, weights).whole(np.asarray(vectors[0]).dtype)
