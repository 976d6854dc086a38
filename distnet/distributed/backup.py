"""Synchronous steps with backup workers (Chen et al., "Revisiting Distributed Synchronous
SGD", 2016): N + b workers compute each step, the first N gradients to arrive are applied
and the b late ones dropped, so one straggler no longer sets the pace.

A worker still busy with a dropped gradient is not given the next step; it rejoins once
its late computation ends (otherwise a straggler's queue would grow without bound), and
the driver waits for late workers only when fewer than N are free. Which gradients arrive
first depends on timing, so this mode is not deterministic.
"""

from __future__ import annotations

import ray

from distnet.distributed.group import StepRefs
from distnet.distributed.sync_loop import SyncLoop


class BackupLoop(SyncLoop):
    """mode = "sync" with backup_workers: each step applies the first N gradients."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.needed = self.ledger.job.train.workers
        self.late: dict = {}  # report ref of a dropped, still running gradient -> its worker

    def submit(self, step: int) -> StepRefs:
        """Submit step `step`; returns once its first N gradients have arrived."""
        group = self.group
        self._wait_for_late(len(group.workers) - self.needed)
        busy = set(self.late.values())
        free = [i for i in range(len(group.workers)) if i not in busy]
        epoch, step_in_epoch = self.plan.position(step)
        outs = {i: group.compute(i, epoch, step_in_epoch) for i in free}
        worker_of = {out[-1]: i for i, out in outs.items()}
        first, late = ray.wait(list(worker_of), num_returns=self.needed)
        self.late.update({ref: worker_of[ref] for ref in late})
        arrived = sorted(worker_of[ref] for ref in first)  # a fixed summation order
        refs = group.update(step, arrived, [outs[i] for i in arrived])
        refs.dropped = len(late)
        return refs

    def _wait_for_late(self, max_busy: int) -> None:
        """Free the workers whose dropped gradients are done; wait while more than
        `max_busy` are still busy."""
        if self.late:
            self._forget(ray.wait(list(self.late), num_returns=len(self.late), timeout=0)[0])
        if len(self.late) > max_busy:
            self._forget(ray.wait(list(self.late), num_returns=len(self.late) - max_busy)[0])

    def _forget(self, refs: list) -> None:
        for ref in refs:
            del self.late[ref]
