"""What the loops of every consistency model share.

A loop runs one attempt of a run, from the ledger's state to the plan's last step, on one
actor group: sync_loop.py (deterministic synchronous steps, over the mesh or as Ray
tasks), backup.py (synchronous steps with backup workers) and async_loop.py (async and
SSP). All three take the same constructor; the driver makes a new one for each attempt
(the start and every recovery), so nothing an attempt submitted outlives it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from distnet.distributed.group import ActorGroup
from distnet.distributed.hooks import NO_HOOKS, Hooks
from distnet.distributed.ledger import Ledger
from distnet.distributed.plan import RunPlan
from distnet.distributed.result import StepEvent
from distnet.metrics import StepStats


class Loop:
    """Runs steps on `group` and books them in `ledger`; `on_step(StepEvent)` after each booked
    step, `hooks.phase` at each phase (hooks.py)."""

    def __init__(
        self,
        plan: RunPlan,
        ledger: Ledger,
        group: ActorGroup,
        on_step: Callable[[StepEvent], None] | None = None,
        hooks: Hooks = NO_HOOKS,
    ):
        self.plan, self.ledger, self.group = plan, ledger, group
        self.on_step, self.hooks = on_step, hooks
        self.step_clock = time.perf_counter()

    def run(self) -> None:
        """Train until the plan's last step or early stopping; checkpoint at boundaries."""
        raise NotImplementedError

    def settle(self, deadline: float | None = None) -> None:
        """Book every step submitted so far (by `deadline`, a time.monotonic() value), so
        that the servers' state is the books' to checkpoint."""

    def tick(self) -> float:
        """Seconds since the previous completed step."""
        now = time.perf_counter()
        step_s, self.step_clock = now - self.step_clock, now
        return step_s

    def book(
        self,
        stats: StepStats,
        gradients: list[tuple[int, int]],
        take: Callable[[], object] = lambda: None,
    ) -> None:
        """Book a completed step in the ledger (`take()` takes it off the loop's queue with
        the books, see Ledger.record) and tell on_step."""
        self.ledger.record(stats, gradients, take)
        self.hooks.phase("booked", stats.step)
        if self.on_step:
            self.on_step(
                StepEvent(stats.step, stats.loss, self.group, gradients, stats.dropped or 0)
            )

    def boundary(self, done: int) -> None:
        """After `done` steps (all booked): evaluate if they end an epoch, then checkpoint."""
        if self.plan.ends_epoch(done):
            self.end_epoch(self.plan.epoch_of(done - 1), done)
        self.save(done)

    def save(self, done: int) -> None:
        """Checkpoint the books with the servers' state (all `done` steps booked)."""
        self.hooks.phase("checkpointing", done)
        self.ledger.save(self.group.state())
        self.hooks.phase("checkpointed", done)

    def end_epoch(self, epoch: int, done: int) -> None:
        """Evaluate the end of `epoch`, then book it at once: an interrupt before the books
        leaves the whole epoch end to be repeated after --resume (Ledger.epoch_end_missing)."""
        t = self.ledger.job.train
        self.hooks.phase("evaluating", done)
        train_acc = self.group.evaluate("train", epoch, t.num_train_samples or None)
        val_acc = self.group.evaluate("val", epoch)
        params = self.group.params()
        bn_state = self.group.bn_state() if self.ledger.improves(val_acc) else None
        self.hooks.phase("evaluated", done)
        self.ledger.record_epoch(epoch, done, train_acc, val_acc, params, bn_state)
