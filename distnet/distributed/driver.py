"""The driver: `train`, the start state, the actors' lifecycle and recovery.

A run is planned before any actor starts (plan.py), booked in a ledger that writes the
checkpoints (ledger.py), and trained by the loop of its consistency model: "sync"
(sync_loop.py; with backup workers backup.py), "async" and "ssp" (async_loop.py). The
driver holds no data and computes nothing heavy; everything a resumed or recovered run
needs is in the parameter servers and the checkpoints. After a failure it restores the
newest checkpoint into the actors (the same ones, or those Ray restarted; the mesh transport
connects again) and starts a new loop. Only "sync" without backup workers is deterministic
(and with "topk" compression only while no worker restarts).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

from ray import exceptions as rex

from distnet.checkpoint import (
    ModelSpec,
    TrainState,
    latest_checkpoint,
    list_checkpoints,
    load_latest_checkpoint,
    save_checkpoint,
)
from distnet.config import JobConfig
from distnet.distributed import budget
from distnet.distributed.async_loop import AsyncLoop
from distnet.distributed.backup import BackupLoop
from distnet.distributed.elastic import ElasticGroup, ElasticLoop
from distnet.distributed.group import ActorGroup
from distnet.distributed.hooks import NO_HOOKS, Hooks
from distnet.distributed.interrupts import deferred_interrupts
from distnet.distributed.ledger import Ledger, TrainingDiverged, fresh_state
from distnet.distributed.loop import Loop
from distnet.distributed.mesh import MeshError
from distnet.distributed.plan import RunPlan
from distnet.distributed.preflight import check_checkpoint_dir, check_resumable
from distnet.distributed.result import StepEvent, TrainResult
from distnet.distributed.server import ModelState, StaleServerError
from distnet.distributed.sync_loop import SyncLoop
from distnet.errors import DistnetError
from distnet.models import build_model

MAX_RECOVERIES = 20
INTERRUPT_BUDGET_S = 5  # Ctrl-C: time to book the submitted steps before giving them up
__all__ = ["StepEvent", "TrainResult", "TrainingDiverged", "train"]


def train(
    job: JobConfig,
    *,
    address: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_step: Callable[[StepEvent], None] | None = None,
    hooks: Hooks | None = None,
    dashboard: bool = False,
) -> TrainResult:
    """Train `job` data-parallel on Ray and return its result.

    Joins the Ray cluster at `address` (or RAY_ADDRESS); without one starts a local Ray on
    127.0.0.1 for the run (with its dashboard if `dashboard`). Prepares the dataset first
    if needed. `resume` continues from the latest checkpoint in `job.checkpoint.dir`; a
    fresh run refuses a directory that holds an earlier run's checkpoints unless
    `overwrite` (then deletes them).
    `on_step(StepEvent)` is called after each step completes (for live plots). `hooks`
    are for tests and benchmarks: a straggler, and a callback at each phase of the run
    (hooks.py lists the phases).
    """
    from distnet.data.check import check_dataset
    from distnet.data.prepare import ensure_dataset
    from distnet.distributed.runtime import ray_session

    # What the checkpoint directory allows is decided first: a refused start costs nothing.
    check_checkpoint_dir(job.checkpoint.dir, resume, overwrite)
    # What cannot fit is one line before anything is prepared, allocated or started.
    budget.estimate(job).check_driver(budget.machine_memory())
    data = job.data
    ensure_dataset(
        data.path,
        source=data.source,
        md5=data.md5,
        verify=data.verify,
        shards=data.shards,
        num_val=data.num_val,
    )
    t = job.train
    actors = t.workers + t.backup_workers
    # A bad shard or manifest is one line naming the file, before any actor starts.
    manifest = check_dataset(data.path, num_workers=actors, checksums=data.verify)
    rows = manifest.splits["train"].rows
    budget.check_batch(job, rows)
    RunPlan.for_job(job, rows, 0)  # a schedule that cannot run: one line, Ray not started
    # The most rows a worker evaluates at once: its share of the largest split.
    need = budget.estimate(job, max(-(-s.rows // actors) for s in manifest.splits.values()))
    cpus = math.ceil(actors * t.worker_cpus)
    # Ctrl-C never cuts the books in half (interrupts.py), from the first actor to the last.
    with deferred_interrupts(), ray_session(address, num_cpus=cpus, dashboard=dashboard):
        need.check_cluster(*budget.cluster_memory())
        return _Run(job, rows, progress, on_step, resume, overwrite, hooks or NO_HOOKS).run()


class _Run:
    """One call of `train`: the start state, the actors, one loop per attempt, recovery."""

    def __init__(
        self,
        job: JobConfig,
        rows: int,
        progress: bool,
        on_step,
        resume: bool,
        overwrite: bool,
        hooks: Hooks,
    ):
        self.job, self.on_step, self.hooks = job, on_step, hooks
        model = build_model(job.model, seed=job.seed)
        self.initial = ModelState(0, model.params.vector.copy(), {}, model.get_bn_state())
        self.plan = RunPlan.for_job(job, rows, model.params.vector.nbytes)
        self.model_spec = ModelSpec.like(
            self.initial.params, self.initial.bn_state, max_step=self.plan.total_steps
        )
        # Decided before any actor starts, so a refused start costs nothing.
        self.start_state = self._start_state(resume, overwrite)
        self.loop: Loop | None = None  # the current attempt's, once its state is restored
        try:  # starting the actors takes seconds: a Ctrl-C then must still leave a checkpoint
            self.group = self._new_group()
            self.ledger = Ledger(job, self.plan, model.params.layout, progress)
        except KeyboardInterrupt:
            print(
                f"\ninterrupted while the actors started; checkpoint "
                f"{self._newest_checkpoint()} (continue with --resume)",
                file=sys.stderr,
            )
            raise

    # --- actors ------------------------------------------------------------------------
    def _new_group(self) -> ActorGroup:
        cls = ElasticGroup if self.job.train.elastic else ActorGroup
        return cls(
            self.job,
            self.initial.params.size,
            self.initial.bn_state.size,
            self.plan.schedule,
            self.hooks.worker_delay_s,
        )

    def _new_loop(self) -> Loop:
        """The loop of the job's consistency model, on the current actors."""
        t = self.job.train
        if t.elastic:
            cls = ElasticLoop
        elif t.mode != "sync":
            cls = AsyncLoop
        elif t.backup_workers:
            cls = BackupLoop
        else:
            cls = SyncLoop
        return cls(self.plan, self.ledger, self.group, self.on_step, self.hooks)

    # --- state -------------------------------------------------------------------------
    def _start_state(self, resume: bool, overwrite: bool) -> TrainState:
        directory = self.job.checkpoint.dir
        if resume:
            state = load_latest_checkpoint(directory)  # there is one: check_checkpoint_dir
            check_resumable(self.job, state.config, directory)  # another job's first, then the fit
            self.model_spec.check(state, f"--resume: {directory}")
            return state
        for path in list_checkpoints(directory):  # only with --overwrite (check_checkpoint_dir)
            path.unlink()
        return fresh_state(self.job, self.initial)

    def _latest_state(self) -> TrainState | None:
        return load_latest_checkpoint(self.job.checkpoint.dir, self.model_spec)

    def _restore(self, state: TrainState) -> None:
        """Books and servers from `state`; then a new loop for this attempt."""
        self.loop = None
        self.ledger.restart(state)
        steps = self.ledger.worker_steps()
        applied = sum(steps) if steps else state.step  # async servers count gradients
        self.group.load(
            ModelState(
                applied, state.params, state.opt_state, state.bn_state, steps, state.lagged_params
            )
        )
        self.loop = self._new_loop()

    # --- the run -----------------------------------------------------------------------
    def run(self) -> TrainResult:
        start, first_step = time.perf_counter(), self.start_state.step
        try:  # a Ctrl-C anywhere in training, recovery or the last checkpoint is booked
            self._attempts()
            if self.ledger.unsaved():
                self.loop.save(self.ledger.state.step)
        except KeyboardInterrupt:
            self._interrupted()
            raise
        try:
            return self._finish(time.perf_counter() - start, self.ledger.state.step - first_step)
        except KeyboardInterrupt:  # the books are whole and saved: only the test was cut
            self.ledger.close()
            print(
                f"\ninterrupted while testing; checkpoint {self.ledger.checkpoint_path} "
                f"holds the whole run (continue with --resume to test it)",
                file=sys.stderr,
            )
            raise

    def _attempts(self) -> None:
        """Train to the end; after an actor failure restore the newest checkpoint and go
        on with a new loop."""
        restore_from: TrainState | None = self.start_state
        recoveries = 0
        while True:
            try:  # a restore, the loop: an actor killed in either of them is recovered
                if restore_from is not None:  # in the try: a lost node can fail a restore too
                    self._restore(restore_from)
                    restore_from = None
                    if recoveries:
                        self.hooks.phase("recovered", self.ledger.state.step)
                self.loop.run()
                return
            except (
                rex.RayActorError,
                rex.ObjectLostError,
                rex.RayTaskError,
                rex.RaySystemError,
                MeshError,
            ) as err:
                self.loop = None  # its actors failed: until restored, Ctrl-C keeps the disk's
                _raise_unless_recoverable(err)
                self.hooks.phase("recovering", self.ledger.steps_booked)
                recoveries += 1
                if recoveries > MAX_RECOVERIES:
                    raise DistnetError(f"giving up after {MAX_RECOVERIES} failures: {err}") from err
                restore_from = self._latest_state() or fresh_state(self.job, self.initial)

    def _interrupted(self) -> None:
        """Ctrl-C: within INTERRUPT_BUDGET_S, book every submitted step and checkpoint; when a
        step cannot be read (a dead actor, a broken mesh) or the actors are not restored
        yet, the servers' state is not the books', so the newest checkpoint on disk stays
        the one to resume from (the run's start state if there is none yet)."""
        deadline = time.monotonic() + INTERRUPT_BUDGET_S
        try:
            if self.loop is None:
                raise ValueError("interrupted while the actors were restored")
            self.loop.settle(deadline)
            live = self.group.state(timeout=max(0.0, deadline - time.monotonic()))
            # Async/SSP servers count gradients, N a step; an update the interrupt cut from
            # the books (or from some servers) leaves them elsewhere: keep the last checkpoint.
            per_step = self.job.train.workers if self.job.train.mode != "sync" else 1
            if live.step != per_step * self.ledger.steps_booked:
                raise ValueError(
                    f"the servers are at {live.step}, the books at {self.ledger.steps_booked} steps"
                )
            self.ledger.save(live)
            where = f"checkpoint {self.ledger.checkpoint_path}"
        except (rex.GetTimeoutError, rex.RayError, ValueError, MeshError):
            path = self._newest_checkpoint()
            where = f"steps after the checkpoint {path} were not all read; it is kept"
        self.ledger.bar.close()
        print(
            f"\ninterrupted at step {self.ledger.state.step}; {where} (continue with --resume)",
            file=sys.stderr,
        )

    def _newest_checkpoint(self) -> str:
        """The newest checkpoint on disk, for --resume; the run's start state, written
        now, when it has none yet."""
        path = latest_checkpoint(self.job.checkpoint.dir)
        if path is None:
            cfg = self.job.checkpoint
            path = save_checkpoint(cfg.dir, fresh_state(self.job, self.initial), keep=cfg.keep)
        return str(path)

    def _finish(self, wall: float, steps_run: int) -> TrainResult:
        """Test the kept parameters (as the Solver: the best validation ones) and return
        the result."""
        s = self.ledger.state
        final = self.group.state()
        if s.best_params is not None:
            bn = s.best_bn_state if s.best_bn_state is not None else final.bn_state
            self.group.load(
                ModelState(final.step, s.best_params, final.opt_state, bn, final.worker_steps)
            )
        test_acc = self.group.evaluate("test", s.epoch)
        return self.ledger.result(
            final, self.group.params(), self.group.bn_state(), test_acc, wall, steps_run
        )


def _raise_unless_recoverable(err: Exception) -> None:
    """A dead actor or a restarted server is recovered from; a user error is not."""
    if not isinstance(err, rex.RayTaskError):
        return
    cause = err.cause
    if isinstance(
        cause,
        (
            StaleServerError,
            MeshError,  # a dead or failed peer of the mesh transport
            rex.RayActorError,
            rex.ObjectLostError,
            rex.RaySystemError,
        ),
    ):
        return
    if isinstance(cause, DistnetError):
        raise cause from None
    raise err
