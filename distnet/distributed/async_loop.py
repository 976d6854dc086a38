"""Asynchronous and bounded-staleness training: the servers apply each gradient at once.

mode = "async" (a Hogwild-style parameter server): every worker always has one gradient
computation running on the newest parameters; when one finishes the driver submits its
update (ParameterServer.apply_gradient) and gives that worker its next step at once, so a
fast worker never waits for a slow one. mode = "ssp" with staleness s (Ho et al., "More
Effective Distributed ML via a Stale Synchronous Parallel Parameter Server", 2013): a
worker starts its local step c only once every worker has completed at least c - s steps;
s = 0 is lockstep. Since the servers apply in submission order, when (worker, c) is
applied every worker has at least c - s gradients applied.

Worker i's local step c uses the minibatch of (epoch, step_in_epoch) =
divmod(c, steps_per_epoch), the one worker i would use at synchronous step c, so sampling
stays a pure function of (seed, epoch, step, worker). A run applies N x total_steps
gradients, each computed by whichever worker is free (and allowed): a fast worker runs
ahead through its shard's epochs, a slow one does fewer steps. Every N applied gradients
make one synchronous-equivalent step: one loss-history entry, TensorBoard point and
progress tick; epochs, evaluation and checkpoints count these steps.

The staleness of an applied gradient is how many gradients were applied between the
parameters it was computed on and itself.

Not deterministic: the order in which gradients arrive depends on timing. But no gradient
is lost or applied twice: the servers count each worker's applied local steps (saved in
checkpoints with the parameters), refuse a (worker, step) they have applied already, and
a resumed or recovered run continues each worker at its count; Ray replays the call of a
killed worker on its restarted process.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import ray
from ray import exceptions as rex

from distnet.distributed.interrupts import uninterrupted
from distnet.distributed.loop import Loop
from distnet.distributed.worker import WorkerReport
from distnet.metrics import StepStats


@dataclass
class _Running:
    """A gradient computation that has not come back yet."""

    worker: int
    local_step: int
    version: int  # gradients applied into the parameters it reads
    outs: list  # refs: gradient slices, [batchnorm statistics], WorkerReport


@dataclass
class _Applied:
    """A gradient whose update has been submitted."""

    worker: int
    local_step: int
    staleness: int
    report: WorkerReport
    server_reports: list  # refs, one per server


class AsyncLoop(Loop):
    """mode = "async" or "ssp": each gradient applied as soon as it arrives."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        t = self.ledger.job.train
        self.n = t.workers
        self.bound = t.staleness if t.mode == "ssp" else None
        self.budget = self.plan.total_steps * self.n  # gradients to apply in the whole run
        self.done = self.ledger.worker_steps()  # per worker: updates submitted
        self.applied = sum(self.done)
        self.running: dict = {}  # WorkerReport ref -> _Running
        self.unrecorded: list[_Applied] = []
        self.compute_s = [0.0] * self.n
        self.start, self.start_done = time.perf_counter(), list(self.done)

    def run(self) -> None:
        step = self.ledger.state.step
        if step and self.ledger.epoch_end_missing(step):  # an interrupt cut its evaluation
            self.boundary(step)
        self._submit()
        while self.running:
            self._apply_next()
            self._submit()  # the worker that came back starts again before any bookkeeping
            if self.applied % self.n == 0 and self._step_completed(self.applied // self.n):
                break  # stopped early: gradients still running are never applied
        self._record_all()

    def settle(self, deadline: float | None = None) -> None:
        """Apply arriving gradients until they make whole steps (starting what that takes),
        then book them all, by `deadline`; gradients still computing are never applied (a
        resumed run computes them again)."""
        while self.applied % self.n:
            self._submit()
            self._apply_next(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self._record_all(deadline)

    def _apply_next(self, timeout: float | None = None) -> None:
        """Wait (at most `timeout` s) for the next gradient and submit its update."""
        ready, _ = ray.wait(list(self.running), num_returns=1, timeout=timeout)
        if not ready:
            raise rex.GetTimeoutError(f"no gradient arrived within {timeout} s")
        report = ray.get(ready[0])
        # Submitted to the servers and counted here together (group.apply only submits):
        # a Ctrl-C between the two would leave an applied gradient the books never see.
        with uninterrupted():
            job = self.running.pop(ready[0])
            server_reports = self.group.apply(job.worker, job.local_step, job.outs)
            self.unrecorded.append(
                _Applied(
                    job.worker, job.local_step, self.applied - job.version, report, server_reports
                )
            )
            self.applied += 1
            self.done[job.worker] += 1

    def _submit(self) -> None:
        """Give every free worker its next step, within the budget and the SSP bound."""
        busy = {job.worker for job in self.running.values()}
        floor = min(self.done)
        for i in range(self.n):
            if self.applied + len(self.running) >= self.budget:
                return
            if i in busy or (self.bound is not None and self.done[i] > floor + self.bound):
                continue
            c = self.done[i]
            with uninterrupted():  # a computation the loop does not know of would be lost
                outs = self.group.compute(i, *self.plan.position(c))
                self.running[outs[-1]] = _Running(i, c, self.applied, outs)
            self.hooks.phase("submitted", c)

    def _step_completed(self, done: int) -> bool:
        """Book synchronous-equivalent steps (one behind, so the driver rarely waits for
        a server) and handle epochs and checkpoints. True when the run should stop early."""
        if not self.plan.at_boundary(done):
            if len(self.unrecorded) >= 2 * self.n:
                self._record_next()
            return False
        self._record_all()
        self.boundary(done)
        return self.ledger.stopped_early()

    def _record_all(self, deadline: float | None = None) -> None:
        """Book every applied gradient, N per step (by `deadline`)."""
        while self.unrecorded:
            self._record_next(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _record_next(self, timeout: float | None = None) -> None:
        """Book the oldest N applied gradients as one step. They leave `unrecorded` once
        their servers' reports are read, as they are booked (Ledger.record): an interrupted
        read is read again, and no gradient is booked twice."""
        grads = self.unrecorded[: self.n]
        k = len(self.group.servers)
        servers = ray.get([ref for g in grads for ref in g.server_reports], timeout=timeout)
        step = self.ledger.steps_booked
        self.hooks.phase("fetched", step)
        self.hooks.reports(step, [g.report for g in grads], servers)

        def take() -> None:
            del self.unrecorded[: len(grads)]

        per_grad = [servers[j * k : (j + 1) * k] for j in range(len(grads))]
        reports = [g.report for g in grads]
        for g in grads:
            self.compute_s[g.worker] = g.report.compute_s
        samples = sum(r.num_samples for r in reports)
        step_s = self.tick()
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.book(
            StepStats(
                step=step,
                loss=sum(r.loss * r.num_samples for r in reports) / samples,
                learning_rate=servers[0].learning_rate,
                grad_norm=math.sqrt(sum(s.grad_sq_norm for s in servers) / len(grads)),
                samples_per_s=samples / step_s,
                step_s=step_s,
                compute_s=list(self.compute_s),
                server_update_s=sum(max(s.update_s for s in shards) for shards in per_grad),
                grad_bytes=sum(r.sent_bytes for r in reports),
                param_bytes=self.plan.param_bytes * len(grads),
                staleness=[g.staleness for g in grads],
                steps_per_s=[
                    (d - d0) / elapsed for d, d0 in zip(self.done, self.start_done, strict=True)
                ],
            ),
            [
                (g.worker, g.local_step)
                for g, shards in zip(grads, per_grad, strict=True)
                if all(s.received for s in shards)
            ],
            take,
        )
