"""Elastic training: workers join and leave a running synchronous job, with exact results.

Each step's global batch is cut into V = train.max_workers blocks; block b is exactly what
worker b of a fixed run with V workers computes (its rows, batch, batchnorm statistics,
augmentation and dropout draws: GradientWorker.compute_blocks). The live workers split
the blocks between them (`assign_blocks`) and return each block's gradient separately, and
the servers combine them in block order, as a fixed run combines its workers in worker
order. So an elastic run equals the fixed run with V workers bit for bit, whatever the
membership (docs/elastic.md).

Membership changes between steps. A worker joins when the cluster has a free CPU for it
(looked at no more than every LOOK_EVERY_S); a worker whose node is lost (Ray does not
restart elastic workers) is dropped at once, and the steps submitted but not booked are
submitted again with its blocks on the workers left. A step whose gradients failed never
reached the servers that needed them; which servers did apply a step is read from their
step counters, and those keep their update: nothing is lost or applied twice. Below
min_workers the run waits up to train.elastic_wait_s for workers, then stops with one line
and a checkpoint. A lost parameter server is not elastic: the driver's recovery restores
the newest checkpoint, as in fixed runs.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import ray
from ray import exceptions as rex
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from distnet.checkpoint import latest_checkpoint
from distnet.distributed.group import ActorGroup, StepRefs
from distnet.distributed.sync_loop import SyncLoop
from distnet.distributed.worker import GradientWorker
from distnet.errors import DistnetError

LOOK_EVERY_S = 1.0  # how often a step boundary asks Ray for free CPUs
PING_TIMEOUT_S = 60.0  # a worker that does not answer within this is taken for lost
SETTLE_TIMEOUT_S = 120.0  # for the failed steps' server calls to end before they are redone
# What a lost worker's node makes a step's refs raise.
LOST_ERRORS = (rex.RayActorError, rex.ObjectLostError, rex.RayTaskError)


class TooFewWorkers(DistnetError):
    """Fewer than min_workers workers for elastic_wait_s seconds."""


def assign_blocks(blocks: int, workers: int) -> list[list[int]]:
    """Which of `blocks` blocks each of `workers` workers computes: contiguous, balanced.

    >>> assign_blocks(5, 2)
    [[0, 1], [2, 3, 4]]
    """
    if not 1 <= workers <= blocks:
        raise ValueError(f"{workers} workers for {blocks} blocks")
    return [list(range(j * blocks // workers, (j + 1) * blocks // workers)) for j in range(workers)]


def free_worker_slots(worker_cpus: float) -> int:
    """How many more workers the cluster's free CPUs hold now."""
    return math.floor(ray.available_resources().get("CPU", 0.0) / worker_cpus + 1e-9)


@dataclass
class _Submitted:
    """A submitted step and what redoing it needs: the refs it read (per-server parameters
    and batchnorm statistics) and, per server, the refs its update produced."""

    step: int
    position: tuple[int, int]  # (epoch, step in epoch)
    inputs: tuple[list, object]
    updates: list[tuple]  # per server: (params, bn or None, report)


class ElasticGroup(ActorGroup):
    """The actors of an elastic run: K parameter servers on the driver's node, between
    min_workers and max_workers gradient workers, and the blocks each one computes.
    Membership changes are queued in `changes` as (what happened, workers) for the loop
    to book."""

    def __init__(self, job, param_size, bn_size, schedule, worker_delay_s: float = 0.0):
        t = job.train
        self.blocks, self.min_workers, self.max_workers = t.workers, t.min_workers, t.max_workers
        self.delay_s = worker_delay_s
        self.changes: list[tuple[str, int]] = []
        self.joining = None  # (actor, its readiness ref): one worker starting at a time
        self.last_look = time.monotonic()
        self.submitted: dict[int, _Submitted] = {}
        self.slots = 0  # workers started so far
        self._said = False  # whether the run said it waits for workers
        super().__init__(job, param_size, bn_size, schedule, worker_delay_s)
        self.changes.append((f"started with {len(self.workers)} workers", len(self.workers)))

    # --- actors ------------------------------------------------------------------------
    def _server_options(self) -> dict:
        """On the driver's node: a lost worker node never takes a server with it."""
        here = ray.get_runtime_context().get_node_id()
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(here, soft=False)}

    def _start_workers(self, worker_delay_s: float) -> list:
        self.worker_cls = ray.remote(
            num_cpus=self.job.train.worker_cpus, max_restarts=0, max_task_retries=0
        )(GradientWorker)
        deadline = time.monotonic() + self.job.train.elastic_wait_s
        while (free := free_worker_slots(self.job.train.worker_cpus)) < self.min_workers:
            self._waiting(free, "at the start", deadline)
            time.sleep(1.0)
        return [self._new_worker() for _ in range(min(free, self.max_workers))]

    def _new_worker(self):
        slot, self.slots = self.slots, self.slots + 1
        block = slot % self.blocks  # the shard it opens first (and checks at its start)
        return self.worker_cls.options(scheduling_strategy="SPREAD").remote(
            self.job,
            block,
            self.blocks,
            int(self.weights[block]),
            self.bounds,
            self.delay_s if slot == 0 else 0.0,
        )

    def kill(self) -> None:
        super().kill()
        if self.joining is not None:
            ray.kill(self.joining[0])
            self.joining = None

    def load(self, state) -> None:
        super().load(state)
        self.submitted.clear()

    def grow(self) -> None:
        """At a step boundary: add a worker that has started; start one if the cluster
        has a free CPU for it (asking Ray no more than every LOOK_EVERY_S)."""
        if self.joining is not None:
            actor, ready = self.joining
            if not ray.wait([ready], timeout=0)[0]:
                return
            self.joining = None
            try:
                ray.get(ready)
            except rex.RayActorError:  # its node went while it started
                return
            if len(self.workers) >= self.max_workers:  # filled meanwhile (wait_for_workers)
                ray.kill(actor)
                return
            self.workers.append(actor)
            self.changes.append(("a worker joined", len(self.workers)))
            return
        now = time.monotonic()
        if len(self.workers) >= self.max_workers or now - self.last_look < LOOK_EVERY_S:
            return
        self.last_look = now
        if free_worker_slots(self.job.train.worker_cpus) >= 1:
            actor = self._new_worker()
            self.joining = (actor, actor.num_rows.remote())

    def drop_lost(self) -> int:
        """Drop the workers that are gone (dead, or silent for PING_TIMEOUT_S); how many."""
        pings = [w.pid.remote() for w in self.workers]
        ready, _ = ray.wait(pings, num_returns=len(pings), timeout=PING_TIMEOUT_S)
        alive = []
        for worker, ping in zip(self.workers, pings, strict=True):
            if ping in ready:
                try:
                    ray.get(ping)
                    alive.append(worker)
                    continue
                except rex.RayActorError:
                    pass
            ray.kill(worker)
        lost = len(self.workers) - len(alive)
        self.workers = alive
        if lost:
            what = "a worker was lost" if lost == 1 else f"{lost} workers were lost"
            self.changes.append((what, len(alive)))
        return lost

    def wait_for_workers(self) -> None:
        """Until min_workers workers are live: start workers on free CPUs; TooFewWorkers
        after elastic_wait_s."""
        deadline = time.monotonic() + self.job.train.elastic_wait_s
        while len(self.workers) < self.min_workers:
            self._waiting(len(self.workers), "", deadline)
            starting = [
                self._new_worker()
                for _ in range(
                    min(
                        free_worker_slots(self.job.train.worker_cpus),
                        self.max_workers - len(self.workers),
                    )
                )
            ]
            if not starting:
                time.sleep(1.0)
                continue
            checks = [w.num_rows.remote() for w in starting]
            ready, _ = ray.wait(checks, num_returns=len(checks), timeout=PING_TIMEOUT_S)
            for worker, check in zip(starting, checks, strict=True):
                try:
                    if check not in ready:
                        raise rex.GetTimeoutError
                    ray.get(check)
                    self.workers.append(worker)
                    self.changes.append(("a worker joined", len(self.workers)))
                except (rex.RayActorError, rex.GetTimeoutError):
                    ray.kill(worker)

    def _waiting(self, live: int, when: str, deadline: float) -> None:
        """Say once that the run waits; TooFewWorkers once `deadline` passed."""
        wait_s = self.job.train.elastic_wait_s
        if time.monotonic() >= deadline:
            raise TooFewWorkers(
                f"only {live} of train.min_workers = {self.min_workers} workers {when}"
                f"{' ' if when else ''}for {wait_s:g} s (train.elastic_wait_s)"
            )
        if not self._said:
            print(
                f"distnet: {live} of train.min_workers = {self.min_workers} workers; "
                f"waiting up to {wait_s:g} s for free CPUs",
                file=sys.stderr,
            )
            self._said = True

    # --- steps -------------------------------------------------------------------------
    def step(self, step: int, epoch: int, step_in_epoch: int) -> StepRefs:
        """Submit one step: every block on some live worker, the servers' update in block
        order; returns at once."""
        self._said = False
        return self._submit(step, (epoch, step_in_epoch), (self.param_refs, self.bn_ref), {})

    def _submit(self, step: int, position, inputs, keep: dict) -> StepRefs:
        """Step `step` read from `inputs`; servers in `keep` (server -> its update refs)
        applied it already and keep their update."""
        params, bn = inputs
        per_block = len(self.servers) + self.has_bn + 1
        outs: list = [None] * self.blocks
        for worker, blocks in zip(
            self.workers, assign_blocks(self.blocks, len(self.workers)), strict=True
        ):
            refs = worker.compute_blocks.options(num_returns=len(blocks) * per_block).remote(
                blocks, *position, bn, *params
            )
            for j, block in enumerate(blocks):
                outs[block] = refs[j * per_block : (j + 1) * per_block]
        order = list(range(self.blocks))
        updates = [
            keep[k] if k in keep else self.apply_on(k, step, order, outs)
            for k in range(len(self.servers))
        ]
        self.param_refs = [params for params, _, _ in updates]
        self.bn_ref = updates[0][1]
        self.submitted = {s: v for s, v in self.submitted.items() if s > step - 4}
        self.submitted[step] = _Submitted(step, position, inputs, updates)
        return StepRefs(step, [out[-1] for out in outs], [u[2] for u in updates], order)

    def recover(self, pending: list[StepRefs], err: Exception) -> list[StepRefs]:
        """After `err` reading the oldest of `pending` (submitted, not booked, oldest
        first): drop the lost workers, wait for min_workers, and submit the steps again
        on the workers left. Re-raises `err` if no worker was lost or a server is not
        where the books say (the driver's recovery then restores a checkpoint)."""
        if not self.drop_lost():
            raise err
        first = pending[0].step
        applied = self.server_steps(pending)
        if any(not first <= s <= first + len(pending) for s in applied):
            raise err
        self.wait_for_workers()
        redone, inputs = [], self.submitted[first].inputs
        for refs in pending:
            old = self.submitted[refs.step]
            keep = {k: old.updates[k] for k, s in enumerate(applied) if s > refs.step}
            redone.append(self._submit(refs.step, old.position, inputs, keep))
            inputs = (self.param_refs, self.bn_ref)
        return redone

    def server_steps(self, pending: list[StepRefs]) -> list[int]:
        """Each server's step counter once the updates of `pending` have ended (applied or
        failed): how many steps it applied."""
        reports = [r for refs in pending for r in refs.server_reports]
        ray.wait(reports, num_returns=len(reports), timeout=SETTLE_TIMEOUT_S)
        return ray.get([s.__ray_call__.remote(_server_step) for s in self.servers])

    def evaluate(self, split: str, epoch: int, max_samples: int | None = None) -> float:
        """Accuracy on `split`, block by block as the fixed run's workers score it; a
        block whose worker is lost is scored again on another."""
        per_block = None if max_samples is None else -(-max_samples // self.blocks)
        counts: dict[int, tuple[int, int]] = {}
        todo = list(range(self.blocks))
        while todo:
            refs = {}
            for worker, share in zip(
                self.workers, assign_blocks(len(todo), len(self.workers)), strict=True
            ):
                for j in share:
                    refs[todo[j]] = worker.evaluate.remote(
                        split, per_block, epoch, self.bn_ref, *self.param_refs, block=todo[j]
                    )
            todo = []
            for block, ref in refs.items():
                try:
                    counts[block] = ray.get(ref)
                except (rex.RayActorError, rex.ObjectLostError):
                    todo.append(block)
            if todo:
                if not self.drop_lost():
                    ray.get([refs[b] for b in todo])  # raises what failed
                self.wait_for_workers()
        correct, total = map(sum, zip(*counts.values(), strict=True))
        return correct / max(total, 1)


def _server_step(server) -> int:
    """In a server's process: the steps it applied (-1 if it holds no state: restarted)."""
    return -1 if server.state is None else server.state.step


class ElasticLoop(SyncLoop):
    """mode = "sync" with max_workers: SyncLoop on an ElasticGroup, which grows at step
    boundaries and, when a worker is lost, redoes the steps not booked yet."""

    group: ElasticGroup

    def run(self) -> None:
        if not self.group.changes:
            n = len(self.group.workers)
            self.group.changes.append((f"continued with {n} workers", n))
        self._book_changes(self.ledger.state.step)
        super().run()

    def submit(self, step: int) -> StepRefs:
        self.group.grow()
        self._book_changes(step)
        return super().submit(step)

    def _complete_oldest(self, deadline: float | None = None) -> None:
        while True:
            try:
                return super()._complete_oldest(deadline)
            except LOST_ERRORS as err:
                if deadline is not None:  # an interrupt: no time to recover
                    raise
                step = self.pending[0].step
                try:
                    self.pending = self.group.recover(self.pending, err)
                except TooFewWorkers as short:
                    self._book_changes(step)
                    self._stop(short)
                self._book_changes(step)

    def boundary(self, done: int) -> None:
        try:
            super().boundary(done)
        except TooFewWorkers as short:
            self._book_changes(done)
            self._stop(short)
        self._book_changes(done)

    def _book_changes(self, step: int) -> None:
        changes, self.group.changes = self.group.changes, []
        for what, workers in changes:
            self.ledger.record_membership(step, workers, what)
            self.hooks.membership(step, workers, what)

    def _stop(self, short: TooFewWorkers):
        """Too few workers: checkpoint the books if the servers hold exactly them (else
        the newest checkpoint on disk stays the one to resume from), then stop."""
        booked = self.ledger.steps_booked
        if all(s == booked for s in self.group.server_steps(self.pending)):
            self.pending = []
            self.save(booked)
            where = f"checkpoint {self.ledger.checkpoint_path}"
        else:
            where = f"checkpoint {latest_checkpoint(self.ledger.job.checkpoint.dir)} is kept"
        raise DistnetError(
            f"{short}; stopped at step {booked}, {where} (continue with --resume)"
        ) from None
