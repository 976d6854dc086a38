"""The training loop: epochs of steps, evaluation, checkpoints, recovery.

The driver holds no data and computes nothing heavy: it submits each synchronous step as
ObjectRefs (see group.py) and reads the small reports of step t while step t+1 runs.
Everything a resumed or recovered run needs is in the parameter servers and the
checkpoints. `[train] mode` picks the consistency model: "sync" (this loop; with backup
workers see backup.py), "async" and "ssp" (async_loop.py). Only "sync" without backup
workers is deterministic (and with "topk" compression only while no worker restarts).
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
from distnet.distributed import sampling
from distnet.distributed.async_loop import AsyncLoop
from distnet.distributed.backup import BackupSteps
from distnet.distributed.compiled import CompiledSteps
from distnet.distributed.group import (
    ActorGroup,
    ModelState,
    StepRefs,
    actor_batch_sizes,
)
from distnet.distributed.result import StepEvent, TrainResult
from distnet.distributed.runtime import single_node
from distnet.distributed.server import StaleServerError
from distnet.errors import DistnetError
from distnet.metrics import RunLogger, StepStats, flat_hparams, progress_bar
from distnet.models import build_model
from distnet.schedules import Schedule

MAX_RECOVERIES = 20
INTERRUPT_BUDGET_S = 5  # Ctrl-C: time to book the submitted steps before giving them up
__all__ = ["StepEvent", "TrainResult", "TrainingDiverged", "train"]


class TrainingDiverged(DistnetError):
    """The loss became NaN or infinite."""


def train(job: JobConfig, *, address: str | None = None, resume: bool = False,
          overwrite: bool = False, progress: bool = True,
          on_step: Callable[[StepEvent], None] | None = None) -> TrainResult:
    """Train `job` data-parallel on Ray and return its result.

    Joins the Ray cluster at `address` (or RAY_ADDRESS); without one starts a local Ray on
    127.0.0.1 for the run. Prepares the dataset first if needed. `resume` continues from
    the latest checkpoint in `job.checkpoint.dir`; a fresh run refuses a directory that
    holds an earlier run's checkpoints unless `overwrite` (then deletes them).
    `on_step(StepEvent)` is called after each step completes (for live plots; the tests
    inject failures with it).
    """
    from distnet.data.check import check_dataset
    from distnet.data.prepare import ensure_dataset
    from distnet.distributed.runtime import ray_session

    data = job.data
    ensure_dataset(data.path, source=data.source, md5=data.md5, verify=data.verify,
                   shards=data.shards, num_val=data.num_val)
    t = job.train
    # A bad shard or manifest is one line naming the file, before any actor starts.
    check_dataset(data.path, num_workers=t.workers + t.backup_workers, checksums=data.verify)
    cpus = math.ceil((t.workers + t.backup_workers) * t.worker_cpus)
    with ray_session(address, num_cpus=cpus):
        return _Run(job, progress, on_step, resume, overwrite).run()


class _Run:
    """One call of `train`: the loop and the bookkeeping around it."""

    def __init__(self, job: JobConfig, progress: bool, on_step, resume: bool,
                 overwrite: bool):
        from distnet.data.reader import assign_rows, load_manifest

        self.job, self.on_step = job, on_step
        t = job.train
        rows = load_manifest(job.data.path).splits["train"].rows
        actors = t.workers + t.backup_workers
        if actors > rows:
            raise DistnetError(f"more workers ({actors}) than training images ({rows})")
        worker_rows = [stop - start for start, stop in
                       (assign_rows(rows, i, actors) for i in range(actors))]
        self.steps_per_epoch = sampling.steps_per_epoch(worker_rows, actor_batch_sizes(t))
        self.total_steps = self.steps_per_epoch * t.num_epochs
        if t.max_steps is not None:
            self.total_steps = min(self.total_steps, t.max_steps)
        model = build_model(job.model, seed=job.seed)
        self.initial = ModelState(0, model.params.vector.copy(), {}, model.get_bn_state())
        self.layout = model.params.layout
        self.model_spec = ModelSpec.like(self.initial.params, self.initial.bn_state,
                                         max_step=self.total_steps)
        # Decided before any actor starts, so a refused start costs nothing.
        self.start_state = self._start_state(resume, overwrite)
        self.param_bytes = model.params.vector.nbytes  # what each computing worker reads
        o = job.optim
        schedule = Schedule(kind=o.schedule, base_lr=o.learning_rate,
                            steps_per_epoch=self.steps_per_epoch,
                            total_steps=self.steps_per_epoch * t.num_epochs,
                            lr_decay=o.lr_decay, warmup_steps=o.warmup_steps,
                            step_size_epochs=o.step_size_epochs,
                            step_gamma=o.step_gamma,
                            min_lr=o.min_lr)
        self.schedule = schedule
        self.uses_graph = (t.mode == "sync" and not t.backup_workers and t.transport == "graph"
                           and single_node())
        self.graph: CompiledSteps | None = None
        self.group = self._new_group()
        self.logger = RunLogger(job.metrics.logdir, job.metrics.log_every_steps,
                                job.metrics.histograms)
        self.bar = progress_bar(self.total_steps, progress)
        self.checkpoint_path = ""
        self.saved_step = -1
        self.pending: list[StepRefs] = []  # submitted synchronous steps not yet read

    def _new_group(self) -> ActorGroup:
        return ActorGroup(self.job, self.initial.params.size, self.initial.bn_state.size,
                          self.schedule)

    def _steps(self):
        """What submits the synchronous steps: backup workers, a compiled graph or tasks."""
        t = self.job.train
        if t.backup_workers:
            return BackupSteps(self.group, t.workers)
        if not self.uses_graph:
            return self.group
        if self.graph is None:
            # The largest message: a worker's whole gradient plus batchnorm statistics.
            message = self.param_bytes + self.initial.bn_state.nbytes + 64 * 1024
            self.graph = CompiledSteps(self.group, message)
        return self.graph

    def _replace_actors(self) -> None:
        """After a failure in a compiled graph: a fresh actor group (see compiled.py)."""
        self._close_graph(broken=True)
        self.group.kill()
        self.group = self._new_group()

    def _close_graph(self, broken: bool = False) -> None:
        """Bounded, whatever state the graph is in (see CompiledSteps.close)."""
        if self.graph is not None:
            graph, self.graph = self.graph, None
            graph.close(broken)

    # --- state -----------------------------------------------------------------------
    def _fresh_state(self) -> TrainState:
        s = self.initial
        return TrainState(step=0, epoch=0, params=s.params, opt_state={}, bn_state=s.bn_state,
                          best_params=None, best_val_acc=-1.0,
                          history={"loss_history": [], "train_acc_history": [],
                                   "val_acc_history": []},
                          config=self.job.to_dict(), best_bn_state=None)

    def worker_steps(self, state: TrainState) -> list[int]:
        """Async/SSP: each worker's applied local steps (a synchronous checkpoint at step t
        means t each); [] in sync mode, where the servers count steps."""
        if self.job.train.mode == "sync":
            return []
        return [int(state.extra.get(f"worker_steps/{i}", state.step))
                for i in range(self.job.train.workers)]

    def _restore(self, state: TrainState) -> None:
        self.state = state
        steps = self.worker_steps(state)
        applied = sum(steps) if steps else state.step  # async servers count gradients
        self.group.load(ModelState(applied, state.params, state.opt_state, state.bn_state,
                                   steps))

    def _latest_state(self, checked: bool = True) -> TrainState | None:
        """The newest intact checkpoint, checked against the model unless not `checked`."""
        spec = self.model_spec if checked else None
        return load_latest_checkpoint(self.job.checkpoint.dir, spec)

    def _save(self) -> None:
        live = self.group.state()
        s = self.state
        s.step, s.params, s.opt_state, s.bn_state = live.step, live.params, live.opt_state, \
            live.bn_state
        if live.worker_steps:  # async/SSP: N applied gradients make one step
            s.step = live.step // self.job.train.workers
            s.extra.update({f"worker_steps/{i}": n for i, n in enumerate(live.worker_steps)})
        s.epoch = s.step // self.steps_per_epoch
        cfg = self.job.checkpoint
        self.checkpoint_path = str(save_checkpoint(cfg.dir, s, keep=cfg.keep))
        self.saved_step = s.step

    # --- the loop --------------------------------------------------------------------
    def _start_state(self, resume: bool, overwrite: bool) -> TrainState:
        directory = self.job.checkpoint.dir
        if resume:
            state = self._latest_state(checked=False)  # another job's is said so first
            if state is None:
                raise DistnetError(f"--resume: no checkpoint in {directory}")
            for key in ("seed", "model", "optim", "data"):
                if state.config.get(key) != self.job.to_dict()[key]:
                    raise DistnetError(f"--resume: the checkpoints in {directory} were written "
                                       f"with another [{key}] than this job's")
            self.model_spec.check(state, f"--resume: {directory}")
            return state
        existing = list_checkpoints(directory)
        if existing and not overwrite:
            raise DistnetError(f"{directory} holds checkpoints of an earlier run; continue it "
                               f"with --resume, or start again with --overwrite")
        for path in existing:
            path.unlink()
        return self._fresh_state()

    def run(self) -> TrainResult:
        """Train; whatever ends the run, the compiled graph is closed within a bound."""
        try:
            return self._run()
        except KeyboardInterrupt:
            raise  # _interrupted closed a graph it could not read; a readable one is healthy
        except BaseException:
            self._close_graph(broken=True)
            raise
        finally:
            self._close_graph()

    def _run(self) -> TrainResult:
        start = time.perf_counter()
        restore_from: TrainState | None = self.start_state
        first_step = restore_from.step
        recoveries = 0
        while True:
            try:
                if restore_from is not None:  # in the try: a lost node can fail a restore too
                    self._restore(restore_from)
                    self.bar.reset(self.total_steps)
                    self.bar.update(self.state.step)
                    restore_from = None
                self._loop()
                break
            except KeyboardInterrupt:
                self._interrupted()
                raise
            except (rex.RayActorError, rex.ObjectLostError, rex.RayTaskError,
                    rex.RayChannelError, rex.RaySystemError) as err:
                _raise_unless_recoverable(err)
                recoveries += 1
                if recoveries > MAX_RECOVERIES:
                    raise DistnetError(f"giving up after {MAX_RECOVERIES} failures: {err}")
                restore_from = self._latest_state() or self._fresh_state()
                if self.uses_graph:
                    self._replace_actors()
        if self.saved_step != self.state.step:
            self._save()
        wall = time.perf_counter() - start
        return self._finish(wall, self.state.step - first_step)

    def _interrupted(self) -> None:
        """Ctrl-C: within INTERRUPT_BUDGET_S, book every submitted step and checkpoint;
        when a step cannot be read (a compiled-graph read that the interrupt cut, a dead
        actor), the servers are ahead of the books, so the newest checkpoint on disk stays
        the one to resume from (the run's start state if there is none yet)."""
        deadline = time.monotonic() + INTERRUPT_BUDGET_S
        try:
            self._settle(deadline)
            self._save()
            where = f"checkpoint {self.checkpoint_path}"
        except (rex.GetTimeoutError, rex.RayError, ValueError):
            path = latest_checkpoint(self.job.checkpoint.dir)
            if path is None:
                cfg = self.job.checkpoint
                path = save_checkpoint(cfg.dir, self._fresh_state(), keep=cfg.keep)
            self._close_graph(broken=True)
            where = f"steps after the checkpoint {path} were not all read; it is kept"
        self.bar.close()
        print(f"\ninterrupted at step {self.state.step}; {where} (continue with --resume)",
              file=sys.stderr)

    def _loop(self) -> None:
        self.step_clock = time.perf_counter()
        if self.job.train.mode != "sync":
            return AsyncLoop(self).run()
        steps = self._steps()
        self.pending.clear()  # what a failed attempt left submitted is gone with its actors
        step = self.state.step
        if step and self._epoch_end_missing(step):  # a Ctrl-C cut its evaluation
            self.boundary(step)
        while step < self.total_steps and not self.stopped_early():
            epoch, in_epoch = divmod(step, self.steps_per_epoch)
            self.pending.append(steps.step(step, epoch, in_epoch))
            step += 1
            if len(self.pending) > 1:  # one step queued behind the one read
                self._complete_oldest()
            if self.at_boundary(step):
                self._settle()
                self.boundary(step)
        self._settle()

    def _complete_oldest(self, deadline: float | None = None) -> None:
        """Read and book the oldest submitted step; it leaves `pending` only once booked,
        so that an interrupted read is read again (or known lost), never skipped."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        self._complete(self.pending[0], timeout)
        self.pending.pop(0)

    def _epoch_end_missing(self, done: int) -> bool:
        """Whether `done` ends an epoch whose accuracies are not booked yet."""
        if not (done % self.steps_per_epoch == 0 or done == self.total_steps):
            return False
        return len(self.state.history["val_acc_history"]) < -(-done // self.steps_per_epoch)

    def _settle(self, deadline: float | None = None) -> None:
        """Read every submitted step; then the servers' state is the driver's to read."""
        while self.pending:
            self._complete_oldest(deadline)
        if self.graph is not None:
            self.graph.paused()
            self.group.refresh_refs()

    def at_boundary(self, done: int) -> bool:
        """Whether `done` completed steps end an epoch or call for a checkpoint."""
        every = self.job.checkpoint.every_steps
        return (done % self.steps_per_epoch == 0 or done == self.total_steps
                or bool(every and done % every == 0))

    def boundary(self, done: int) -> None:
        """Evaluate at the end of an epoch, then checkpoint (all steps are recorded)."""
        if done % self.steps_per_epoch == 0 or done == self.total_steps:
            self._end_epoch((done - 1) // self.steps_per_epoch, done)
        self._save()

    def _complete(self, refs: StepRefs, timeout: float | None = None) -> None:
        """Read a finished synchronous step's reports and record it."""
        reports, servers = refs.fetch(timeout)
        n = sum(r.num_samples for r in reports)
        step_s = self.tick()
        self.record(StepStats(
            step=refs.step, loss=sum(r.loss * r.num_samples for r in reports) / n,
            learning_rate=servers[0].learning_rate,
            grad_norm=math.sqrt(sum(s.grad_sq_norm for s in servers)),
            samples_per_s=n / step_s, step_s=step_s,
            compute_s=[r.compute_s for r in reports],
            server_update_s=max(s.update_s for s in servers),
            grad_bytes=sum(r.sent_bytes for r in reports),
            param_bytes=self.param_bytes * (len(reports) + refs.dropped),
            dropped=refs.dropped if self.job.train.backup_workers else None),
            [(w, refs.step) for w in refs.workers])

    def tick(self) -> float:
        """Seconds since the previous completed step."""
        now = time.perf_counter()
        step_s, self.step_clock = now - self.step_clock, now
        return step_s

    def record(self, stats: StepStats, gradients: list[tuple[int, int]]) -> None:
        """Book one completed step: NaN check, history, counters, TensorBoard, progress,
        on_step. `gradients` are the (worker, local step) pairs it applied."""
        if not math.isfinite(stats.loss):
            raise TrainingDiverged(f"loss became {stats.loss} at step {stats.step}; stopping "
                                   f"(last checkpoint: {self.checkpoint_path or 'none'})")
        self.state.history["loss_history"].append(stats.loss)
        counts = self.state.extra  # checkpointed with the history they belong to
        for key, value in (("applied_gradients", len(gradients)),
                           ("dropped_gradients", stats.dropped or 0),
                           ("grad_bytes", stats.grad_bytes), ("param_bytes", stats.param_bytes)):
            counts[key] = int(counts.get(key, 0)) + value
        self.logger.step(stats)
        self.bar.set_postfix_str(f"epoch {stats.step // self.steps_per_epoch + 1} "
                                 f"loss {stats.loss:.3f} {stats.samples_per_s:,.0f} samples/s",
                                 refresh=False)
        self.bar.update(1)
        if self.on_step:
            self.on_step(StepEvent(stats.step, stats.loss, self.group, gradients,
                                   stats.dropped or 0))

    def _end_epoch(self, epoch: int, done: int) -> None:
        t = self.job.train
        train_acc = self.group.evaluate("train", epoch, t.num_train_samples or None)
        val_acc = self.group.evaluate("val", epoch)
        best = val_acc > self.state.best_val_acc
        params = self.group.params()
        bn_state = self.group.bn_state() if best else None
        # Booked together after every remote call: a Ctrl-C before here leaves the whole
        # epoch end to be repeated after --resume (see _epoch_end_missing).
        h = self.state.history
        h["train_acc_history"].append(train_acc)
        h["val_acc_history"].append(val_acc)
        if best:
            self.state.best_val_acc, self.state.best_params = val_acc, params
            self.state.best_bn_state = bn_state
            self.state.extra["best_epoch"] = epoch
        self.logger.epoch(done, {"train": train_acc, "val": val_acc},
                          {name: params[off:off + size]
                           for name, _, off, size in self.layout})
        if not self.bar.disable:
            self.bar.write(f"epoch {epoch + 1}/{t.num_epochs}: train acc {train_acc:.3f}, "
                           f"val acc {val_acc:.3f}, best {self.state.best_val_acc:.3f}",
                           file=sys.stderr)

    def stopped_early(self) -> bool:
        patience = self.job.train.early_stopping_patience
        history = self.state.history["val_acc_history"]
        if patience is None or len(history) <= patience:
            return False
        return max(history[-patience:]) <= max(history[:-patience])

    def _finish(self, wall: float, steps_run: int) -> TrainResult:
        s, h = self.state, self.state.history
        final = self.group.state()
        if s.best_params is not None:  # as the Solver: keep the best validation parameters
            bn = s.best_bn_state if s.best_bn_state is not None else final.bn_state
            self.group.load(ModelState(final.step, s.best_params, final.opt_state, bn,
                                       final.worker_steps))
        test_acc = self.group.evaluate("test", s.epoch)
        counts, recorded = s.extra, max(len(h["loss_history"]), 1)
        result = TrainResult(
            train_acc=h["train_acc_history"][-1] if h["train_acc_history"] else float("nan"),
            val_acc=h["val_acc_history"][-1] if h["val_acc_history"] else float("nan"),
            test_acc=test_acc, best_val_acc=s.best_val_acc,
            final_loss=h["loss_history"][-1] if h["loss_history"] else float("nan"),
            steps=s.step, epochs=math.ceil(s.step / self.steps_per_epoch),
            samples_per_s=steps_run * self.job.train.batch_size / wall, wall_s=wall,
            logdir=self.job.metrics.logdir, checkpoint=self.checkpoint_path,
            mode=self.job.train.mode, transport="graph" if self.uses_graph else "tasks",
            applied_gradients=int(counts.get("applied_gradients", 0)),
            dropped_gradients=int(counts.get("dropped_gradients", 0)),
            bytes_per_step=(counts.get("grad_bytes", 0) + counts.get("param_bytes", 0))
            / recorded,
            grad_bytes_per_step=counts.get("grad_bytes", 0) / recorded,
            worker_steps=list(final.worker_steps),
            loss_history=list(h["loss_history"]),
            train_acc_history=list(h["train_acc_history"]),
            val_acc_history=list(h["val_acc_history"]),
            params=self.group.params(), bn_state=self.group.bn_state(),
            final_params=final.params)
        self.logger.hparams(flat_hparams(self.job.to_dict()), {k: v for k, v in result.summary().items()
                                                 if isinstance(v, float)})
        self.logger.close()
        self.bar.close()
        return result


def _raise_unless_recoverable(err: Exception) -> None:
    """A dead actor or a restarted server is recovered from; a user error is not."""
    if not isinstance(err, rex.RayTaskError):
        return
    cause = err.cause
    if isinstance(cause, (StaleServerError, rex.RayActorError, rex.ObjectLostError,
                          rex.RayChannelError, rex.RaySystemError)):  # a broken graph
        return
    if isinstance(cause, DistnetError):
        raise cause from None
    raise err
