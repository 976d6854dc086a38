"""The training loop: epochs of synchronous steps, evaluation, checkpoints, recovery.

The driver holds no data and computes nothing heavy: it submits each step as ObjectRefs
(see group.py) and reads the small reports of step t while step t+1 runs. Everything a
resumed or recovered run needs is in the parameter servers and the checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import ray
from ray import exceptions as rex

from distnet.checkpoint import (TrainState, latest_checkpoint, list_checkpoints,
                                load_checkpoint, save_checkpoint)
from distnet.config import JobConfig, build_model
from distnet.dist import sampling
from distnet.dist.group import ActorGroup, ModelState, StepRefs
from distnet.dist.server import StaleServerError
from distnet.errors import DistnetError
from distnet.metrics import RunLogger, StepStats
from distnet.schedules import Schedule

MAX_RECOVERIES = 20


@dataclass
class StepEvent:
    """Passed to `train(on_step=...)` after each completed step."""

    step: int
    loss: float
    group: ActorGroup  # the run's actors (e.g. `group.worker_pids()`)


class TrainingDiverged(DistnetError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What `train` returns: the Solver's histories plus the run's summary figures.

    `params`/`bn_state` are the kept (best validation) parameters, as the Solver swaps them
    in at the end; `test_acc` is measured with them. `final_params` are the last ones.
    """

    train_acc: float
    val_acc: float
    test_acc: float
    best_val_acc: float
    final_loss: float
    steps: int
    epochs: int
    samples_per_s: float
    wall_s: float
    logdir: str
    checkpoint: str
    loss_history: list[float] = field(repr=False)
    train_acc_history: list[float] = field(repr=False)
    val_acc_history: list[float] = field(repr=False)
    params: np.ndarray = field(repr=False)
    bn_state: np.ndarray = field(repr=False)
    final_params: np.ndarray = field(repr=False)

    def summary(self) -> dict:
        """The JSON-able figures (no histories, no arrays)."""
        skip = {"loss_history", "train_acc_history", "val_acc_history", "params", "bn_state",
                "final_params"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in skip}


def train(job: JobConfig, *, address: str | None = None, resume: bool = False,
          overwrite: bool = False, progress: bool = True, on_step: Callable[[StepEvent], None] | None = None,
          ) -> TrainResult:
    """Train `job` data-parallel on Ray and return its result.

    Joins the Ray cluster at `address` (or RAY_ADDRESS); without one starts a local Ray on
    127.0.0.1 for the run. Prepares the dataset first if needed. `resume` continues from
    the latest checkpoint in `job.checkpoint.dir`; a fresh run refuses a directory that
    holds an earlier run's checkpoints unless `overwrite` (then deletes them). `on_step(StepEvent)` is called after
    each step completes (for live plots; the tests inject failures with it).
    """
    from distnet.data.prepare import ensure_dataset
    from distnet.dist.runtime import ray_session

    data = job.data
    ensure_dataset(data.path, source=data.source, md5=data.md5, verify=data.verify,
                   shards=data.shards, num_val=data.num_val)
    with ray_session(address, num_cpus=math.ceil(job.train.workers * job.train.worker_cpus)):
        return _Run(job, progress, on_step).run(resume, overwrite)


class _Run:
    """One call of `train`: the loop and the bookkeeping around it."""

    def __init__(self, job: JobConfig, progress: bool, on_step):
        from distnet.data.reader import assign_rows, load_manifest

        self.job, self.on_step = job, on_step
        t = job.train
        rows = load_manifest(job.data.path).splits["train"].rows
        if t.workers > rows:
            raise DistnetError(f"more workers ({t.workers}) than training images ({rows})")
        worker_rows = [stop - start for start, stop in
                       (assign_rows(rows, i, t.workers) for i in range(t.workers))]
        self.steps_per_epoch = sampling.steps_per_epoch(worker_rows, t.worker_batch_sizes())
        self.total_steps = self.steps_per_epoch * t.num_epochs
        if t.max_steps is not None:
            self.total_steps = min(self.total_steps, t.max_steps)
        model = build_model(job.model, seed=job.seed)
        self.initial = ModelState(0, model.params.vector.copy(), {}, model.get_bn_state())
        self.layout = model.params.layout
        o = job.optim
        schedule = Schedule(kind=o.schedule, base_lr=o.learning_rate,
                            steps_per_epoch=self.steps_per_epoch,
                            total_steps=self.steps_per_epoch * t.num_epochs,
                            lr_decay=o.lr_decay, warmup_steps=o.warmup_steps,
                            step_size_epochs=o.step_size_epochs,
                            step_gamma=o.step_gamma if o.step_gamma is not None else 0.1,
                            min_lr=o.min_lr)
        self.group = ActorGroup(job, model.params.vector.size, self.initial.bn_state.size,
                                schedule)
        self.logger = RunLogger(job.metrics.logdir, job.metrics.log_every_steps,
                                job.metrics.histograms)
        self.bar = _progress_bar(self.total_steps, progress)
        self.checkpoint_path = ""
        self.saved_step = -1

    # --- state -----------------------------------------------------------------------
    def _fresh_state(self) -> TrainState:
        s = self.initial
        return TrainState(step=0, epoch=0, params=s.params, opt_state={}, bn_state=s.bn_state,
                          best_params=None, best_val_acc=-1.0,
                          history={"loss_history": [], "train_acc_history": [],
                                   "val_acc_history": []},
                          config=self.job.to_dict(), best_bn_state=None)

    def _restore(self, state: TrainState) -> None:
        self.state = state
        self.group.load(ModelState(state.step, state.params, state.opt_state, state.bn_state))

    def _latest_state(self) -> TrainState | None:
        path = latest_checkpoint(self.job.checkpoint.dir)
        return load_checkpoint(path) if path else None

    def _save(self) -> None:
        live = self.group.state()
        s = self.state
        s.step, s.params, s.opt_state, s.bn_state = live.step, live.params, live.opt_state, \
            live.bn_state
        s.epoch = live.step // self.steps_per_epoch
        cfg = self.job.checkpoint
        self.checkpoint_path = str(save_checkpoint(cfg.dir, s, keep=cfg.keep))
        self.saved_step = s.step

    # --- the loop --------------------------------------------------------------------
    def _start_state(self, resume: bool, overwrite: bool) -> TrainState:
        directory = self.job.checkpoint.dir
        if resume:
            state = self._latest_state()
            if state is None:
                raise DistnetError(f"--resume: no checkpoint in {directory}")
            for key in ("seed", "model", "optim", "data"):
                if state.config.get(key) != self.job.to_dict()[key]:
                    raise DistnetError(f"--resume: the checkpoints in {directory} were written "
                                       f"with another [{key}] than this job's")
            return state
        existing = list_checkpoints(directory)
        if existing and not overwrite:
            raise DistnetError(f"{directory} holds checkpoints of an earlier run; continue it "
                               f"with --resume, or start again with --overwrite")
        for path in existing:
            path.unlink()
        return self._fresh_state()

    def run(self, resume: bool, overwrite: bool) -> TrainResult:
        start = time.perf_counter()
        self._restore(self._start_state(resume, overwrite))
        self.bar.update(self.state.step)
        first_step = self.state.step
        recoveries = 0
        while True:
            try:
                self._loop()
                break
            except KeyboardInterrupt:
                self._save()
                self.bar.close()
                print(f"\ninterrupted at step {self.state.step}; checkpoint "
                      f"{self.checkpoint_path} (continue with --resume)", file=sys.stderr)
                raise
            except (rex.RayActorError, rex.ObjectLostError, rex.RayTaskError) as err:
                _raise_unless_recoverable(err)
                recoveries += 1
                if recoveries > MAX_RECOVERIES:
                    raise DistnetError(f"giving up after {MAX_RECOVERIES} failures: {err}")
                self._restore(self._latest_state() or self._fresh_state())
                self.bar.reset(self.total_steps)
                self.bar.update(self.state.step)
        if self.saved_step != self.state.step:
            self._save()
        wall = time.perf_counter() - start
        return self._finish(wall, self.state.step - first_step)

    def _loop(self) -> None:
        pending: StepRefs | None = None
        self.step_clock = time.perf_counter()
        step = self.state.step
        while step < self.total_steps and not self._stopped_early():
            epoch, in_epoch = divmod(step, self.steps_per_epoch)
            refs = self.group.step(step, epoch, in_epoch)
            if pending:
                self._complete(pending)
            pending, step = refs, step + 1
            epoch_end = step % self.steps_per_epoch == 0 or step == self.total_steps
            every = self.job.checkpoint.every_steps
            if epoch_end or (every and step % every == 0):
                self._complete(pending)
                pending = None
                if epoch_end:
                    self._end_epoch(epoch)
                self._save()
        if pending:
            self._complete(pending)

    def _complete(self, refs: StepRefs) -> None:
        """Read a finished step's reports: history, TensorBoard, progress, NaN check."""
        reports = ray.get(refs.worker_reports)
        servers = ray.get(refs.server_reports)
        n = sum(r.num_samples for r in reports)
        loss = sum(r.loss * r.num_samples for r in reports) / n
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss} at step {refs.step}; stopping "
                                   f"(last checkpoint: {self.checkpoint_path or 'none'})")
        now = time.perf_counter()
        step_s, self.step_clock = now - self.step_clock, now
        self.state.history["loss_history"].append(loss)
        self.logger.step(StepStats(
            step=refs.step, loss=loss, learning_rate=servers[0].learning_rate,
            grad_norm=math.sqrt(sum(s.grad_sq_norm for s in servers)),
            samples_per_s=n / step_s, step_s=step_s,
            compute_s=[r.compute_s for r in reports],
            server_update_s=max(s.update_s for s in servers)))
        self.bar.set_postfix_str(f"epoch {refs.step // self.steps_per_epoch + 1} "
                                 f"loss {loss:.3f} {n / step_s:,.0f} samples/s", refresh=False)
        self.bar.update(1)
        if self.on_step:
            self.on_step(StepEvent(refs.step, loss, self.group))

    def _end_epoch(self, epoch: int) -> None:
        t = self.job.train
        train_acc = self.group.evaluate("train", epoch, t.num_train_samples or None)
        val_acc = self.group.evaluate("val", epoch)
        h = self.state.history
        h["train_acc_history"].append(train_acc)
        h["val_acc_history"].append(val_acc)
        if val_acc > self.state.best_val_acc:
            self.state.best_val_acc = val_acc
            self.state.best_params = self.group.params()
            self.state.best_bn_state = self.group.bn_state()
            self.state.extra["best_epoch"] = epoch
        params = self.group.params()
        self.logger.epoch(self.state.step + 1, {"train": train_acc, "val": val_acc},
                          {name: params[off:off + size]
                           for name, _, off, size in self.layout})
        if not self.bar.disable:
            self.bar.write(f"epoch {epoch + 1}/{t.num_epochs}: train acc {train_acc:.3f}, "
                           f"val acc {val_acc:.3f}, best {self.state.best_val_acc:.3f}",
                           file=sys.stderr)

    def _stopped_early(self) -> bool:
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
            self.group.load(ModelState(final.step, s.best_params, final.opt_state, bn))
        test_acc = self.group.evaluate("test", s.epoch)
        result = TrainResult(
            train_acc=h["train_acc_history"][-1] if h["train_acc_history"] else float("nan"),
            val_acc=h["val_acc_history"][-1] if h["val_acc_history"] else float("nan"),
            test_acc=test_acc, best_val_acc=s.best_val_acc,
            final_loss=h["loss_history"][-1] if h["loss_history"] else float("nan"),
            steps=s.step, epochs=math.ceil(s.step / self.steps_per_epoch),
            samples_per_s=steps_run * self.job.train.batch_size / wall, wall_s=wall,
            logdir=self.job.metrics.logdir, checkpoint=self.checkpoint_path,
            loss_history=list(h["loss_history"]),
            train_acc_history=list(h["train_acc_history"]),
            val_acc_history=list(h["val_acc_history"]),
            params=self.group.params(), bn_state=self.group.bn_state(),
            final_params=final.params)
        self.logger.hparams(_hparams(self.job), {k: v for k, v in result.summary().items()
                                                 if isinstance(v, float)})
        self.logger.close()
        self.bar.close()
        return result


def _hparams(job: JobConfig) -> dict:
    flat = {}
    for section, values in job.to_dict().items():
        if isinstance(values, dict):
            flat.update({f"{section}.{k}": v for k, v in values.items() if v is not None})
        else:
            flat[section] = values
    return flat


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="step", file=sys.stderr,
                dynamic_ncols=True)


def _raise_unless_recoverable(err: Exception) -> None:
    """A dead actor or a restarted server is recovered from; a user error is not."""
    if not isinstance(err, rex.RayTaskError):
        return
    cause = err.cause
    if isinstance(cause, (StaleServerError, rex.RayActorError, rex.ObjectLostError)):
        return
    if isinstance(cause, DistnetError):
        raise cause from None
    raise err
