"""Synchronous training: every step averages one gradient of each worker (deterministic).

Each step is submitted as small actor calls whose bytes travel between the actors over TCP
(mesh.py) or as ObjectRefs (group.py); the driver reads the small reports of step t while
step t+1 runs, so it never makes the actors wait. With "topk" compression a run stays
deterministic only while no worker restarts (its error-feedback residual is worker state).
"""

from __future__ import annotations

import math
import time

from distnet.distributed.group import StepRefs
from distnet.distributed.loop import Loop
from distnet.metrics import StepStats


class SyncLoop(Loop):
    """mode = "sync": one step queued behind the one being read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending: list[StepRefs] = []  # submitted steps not booked yet, oldest first
        self._call_step_s = 0.0  # the average step time of the call being booked

    def run(self) -> None:
        ledger, plan = self.ledger, self.plan
        step = ledger.state.step
        if step and ledger.epoch_end_missing(step):  # an interrupt cut its evaluation
            self.boundary(step)
        while step < plan.total_steps and not ledger.stopped_early():
            submitted = self.submit_steps(step)
            for refs in submitted:
                self.pending.append(refs)
                self.hooks.phase("submitted", refs.step)
            step += len(submitted)
            while len(self.pending) > len(submitted):  # what was submitted before
                self._complete_oldest()
            if plan.at_boundary(step):
                self.settle()
                self.boundary(step)
        self.settle()

    def submit(self, step: int) -> StepRefs:
        """Submit step `step`; returns at once."""
        return self.group.step(step, *self.plan.position(step))

    def submit_steps(self, step: int) -> list[StepRefs]:
        """Submit step `step` and, with train.steps_per_call > 1 over the mesh, the steps
        after it up to that many, to the next boundary or the end; returns at once."""
        plan = self.plan
        most = self.ledger.job.train.steps_per_call if self.group.uses_mesh else 1
        end = step + 1
        while end - step < most and end < plan.total_steps and not plan.at_boundary(end):
            end += 1
        if end - step == 1:
            return [self.submit(step)]
        steps = list(range(step, end))
        return self.group.mesh_steps(steps, [plan.position(s) for s in steps])

    def settle(self, deadline: float | None = None) -> None:
        while self.pending:
            self._complete_oldest(deadline)

    def _complete_oldest(self, deadline: float | None = None) -> None:
        """Read and book the oldest submitted step. It leaves `pending` as it is booked, in
        one uninterrupted block (interrupts.py), and what was read stays on it
        (StepRefs.read): an interrupted read is read again (or known lost), a step is never
        skipped nor booked twice."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        refs = self.pending[0]
        reports, servers = refs.fetch(timeout)
        self.hooks.phase("fetched", refs.step)
        self.hooks.reports(refs.step, reports, servers)
        self._complete(refs, reports, servers, take=lambda: self.pending.pop(0))

    def _complete(self, refs: StepRefs, reports: list, servers: list, take) -> None:
        """Book a step from its reports; `take()` takes it off `pending` (Loop.book)."""
        n = sum(r.num_samples for r in reports)
        if not refs.index:  # the steps of one call arrive together: each gets its average
            self._call_step_s = self.tick() / refs.of
        step_s = self._call_step_s
        self.book(
            StepStats(
                step=refs.step,
                loss=sum(r.loss * r.num_samples for r in reports) / n,
                learning_rate=servers[0].learning_rate,
                grad_norm=math.sqrt(sum(s.grad_sq_norm for s in servers)),
                samples_per_s=n / step_s,
                step_s=step_s,
                compute_s=[r.compute_s for r in reports],
                server_update_s=max(s.update_s for s in servers),
                grad_bytes=sum(r.sent_bytes for r in reports),
                param_bytes=self.plan.param_bytes * (len(reports) + refs.dropped),
                dropped=refs.dropped if self.ledger.job.train.backup_workers else None,
            ),
            [(w, refs.step) for w in refs.workers],
            take,
        )
