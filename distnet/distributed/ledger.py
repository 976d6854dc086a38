"""The books of one run: what it has done, written down where it survives (no Ray here).

The ledger owns the run's TrainState (histories, counters, best parameters), the
checkpoints written from it, the NaN check, early stopping, TensorBoard, the progress bar
and the final TrainResult. The loops measure and the driver moves state between the
actors and the ledger; the ledger only books what it is handed, so that the state it
checkpoints always holds exactly the steps and epoch ends it has booked.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable

import numpy as np

from distnet.checkpoint import TrainState, save_checkpoint
from distnet.config import JobConfig
from distnet.distributed.interrupts import uninterrupted
from distnet.distributed.plan import RunPlan
from distnet.distributed.result import TrainResult
from distnet.distributed.server import ModelState
from distnet.early_stopping import no_improvement
from distnet.errors import TrainingDiverged
from distnet.metrics import RunLogger, StepStats, flat_hparams, progress_bar


def fresh_state(job: JobConfig, initial: ModelState) -> TrainState:
    """The state of a run that has not made a step yet."""
    return TrainState(
        step=0,
        epoch=0,
        params=initial.params,
        opt_state={},
        bn_state=initial.bn_state,
        best_params=None,
        best_val_acc=-1.0,
        history={"loss_history": [], "train_acc_history": [], "val_acc_history": []},
        config=job.to_dict(),
        best_bn_state=None,
    )


class Ledger:
    """The books of one `train` call, across its recoveries (`restart` on each)."""

    def __init__(self, job: JobConfig, plan: RunPlan, layout, progress: bool):
        self.job, self.plan = job, plan
        self.layout = layout  # the parameters' names and slices, for weight histograms
        self.state: TrainState | None = None
        self.logger = RunLogger(
            job.metrics.logdir, job.metrics.log_every_steps, job.metrics.histograms
        )
        if progress:  # where to watch the run from its start (the summary says it again)
            logdir = job.metrics.logdir
            print(f"logs: {logdir}  (tensorboard --logdir {logdir})", file=sys.stderr)
        with uninterrupted():  # a tqdm cut half-made fails again in its __del__
            self.bar = progress_bar(plan.total_steps, progress)
        self.checkpoint_path = ""
        self.saved_step = -1

    def restart(self, state: TrainState) -> None:
        """Continue the books from `state` (the start, a resume, a recovery)."""
        self.state = state
        self.bar.reset(self.plan.total_steps)
        self.bar.update(state.step)

    @property
    def steps_booked(self) -> int:
        """Steps in the books (the last checkpoint's `state.step` may be older)."""
        return len(self.state.history["loss_history"])

    def worker_steps(self) -> list[int]:
        """Async/SSP: each worker's applied local steps (a synchronous checkpoint at step t
        means t each); [] in sync mode, where the servers count steps."""
        if self.job.train.mode == "sync":
            return []
        return [
            int(self.state.extra.get(f"worker_steps/{i}", self.state.step))
            for i in range(self.job.train.workers)
        ]

    # --- steps ------------------------------------------------------------------------
    def record(
        self,
        stats: StepStats,
        gradients: list[tuple[int, int]],
        take: Callable[[], object] = lambda: None,
    ) -> None:
        """Book one completed step: NaN check, history, counters, TensorBoard, progress.
        `gradients` are the (worker, local step) pairs it applied; `take()` takes the step
        off the caller's queue in the same uninterrupted block (interrupts.py) as the books,
        so that a Ctrl-C leaves it queued or booked, never both or neither."""
        if not math.isfinite(stats.loss):
            raise TrainingDiverged(
                f"loss became {stats.loss} at step {stats.step}; stopping "
                f"(last checkpoint: {self.checkpoint_path or 'none'})"
            )
        counts = self.state.extra  # checkpointed with the history they belong to
        with uninterrupted():
            take()
            self.state.history["loss_history"].append(stats.loss)
            for key, value in (
                ("applied_gradients", len(gradients)),
                ("dropped_gradients", stats.dropped or 0),
                ("grad_bytes", stats.grad_bytes),
                ("param_bytes", stats.param_bytes),
            ):
                counts[key] = int(counts.get(key, 0)) + value
        self.logger.step(stats)
        self.bar.set_postfix_str(
            f"epoch {self.plan.epoch_of(stats.step) + 1} "
            f"loss {stats.loss:.3f} {stats.samples_per_s:,.0f} samples/s",
            refresh=False,
        )
        self.bar.update(1)

    def record_membership(self, step: int, workers: int, what: str) -> None:
        """Book a change of an elastic run's workers at `step`: in the checkpointed state
        (the number now, every change as JSON), TensorBoard (scalar cluster/workers, a
        text line) and on the progress bar's stream."""
        extra = self.state.extra
        changes = json.loads(str(extra.get("membership", "[]")))
        changes.append([step, workers, what])
        extra["membership"], extra["workers"] = json.dumps(changes), workers
        self.logger.scalars(step, {"cluster/workers": workers})
        self.logger.text(step, "cluster/membership", f"step {step}: {what}, {workers} workers")
        if not self.bar.disable:
            self.bar.write(f"step {step}: {what}; {workers} workers", file=sys.stderr)

    # --- epochs -----------------------------------------------------------------------
    def improves(self, val_acc: float) -> bool:
        """Whether `val_acc` beats the best validation accuracy so far."""
        return val_acc > self.state.best_val_acc

    def record_epoch(
        self,
        epoch: int,
        done: int,
        train_acc: float,
        val_acc: float,
        params: np.ndarray,
        bn_state: np.ndarray | None,
    ) -> None:
        """Book the end of `epoch` (after `done` steps) at once: its accuracies and, if it
        is the best so far, its parameters (`bn_state`: their batchnorm statistics)."""
        s, h = self.state, self.state.history
        with uninterrupted():  # both accuracies and the best, or none (see record)
            h["train_acc_history"].append(train_acc)
            h["val_acc_history"].append(val_acc)
            if self.improves(val_acc):
                s.best_val_acc, s.best_params, s.best_bn_state = val_acc, params, bn_state
                s.extra["best_epoch"] = epoch
        self.logger.epoch(
            done,
            {"train": train_acc, "val": val_acc},
            {
                name: params[off : off + size].reshape(shape)
                for name, shape, off, size in self.layout
            },
        )
        if not self.bar.disable:
            self.bar.write(
                f"epoch {epoch + 1}/{self.job.train.num_epochs}: train acc "
                f"{train_acc:.3f}, val acc {val_acc:.3f}, best {s.best_val_acc:.3f}",
                file=sys.stderr,
            )

    def epoch_end_missing(self, done: int) -> bool:
        """Whether `done` ends an epoch whose accuracies are not booked yet (an interrupt
        cut its evaluation)."""
        if not self.plan.ends_epoch(done):
            return False
        return len(self.state.history["val_acc_history"]) < self.plan.epochs_ended(done)

    def stopped_early(self) -> bool:
        """Early stopping: no better validation accuracy in the last `patience` epochs."""
        return no_improvement(
            self.state.history["val_acc_history"], self.job.train.early_stopping_patience
        )

    # --- checkpoints --------------------------------------------------------------------
    def save(self, live: ModelState) -> None:
        """Checkpoint the books with the servers' state `live`, which must hold exactly the
        steps booked."""
        s = self.state
        with uninterrupted():  # the state is one step's whole, or the previous one's
            s.step, s.params, s.opt_state, s.bn_state, s.lagged_params = (
                live.step,
                live.params,
                live.opt_state,
                live.bn_state,
                live.lagged,
            )
            if live.worker_steps:  # async/SSP: N applied gradients make one step
                s.step = live.step // self.job.train.workers
                s.extra.update({f"worker_steps/{i}": n for i, n in enumerate(live.worker_steps)})
            s.epoch = self.plan.epoch_of(s.step)
        cfg = self.job.checkpoint
        self.checkpoint_path = str(save_checkpoint(cfg.dir, s, keep=cfg.keep))
        self.saved_step = s.step

    def unsaved(self) -> bool:
        """Whether steps were booked after the last checkpoint."""
        return self.saved_step != self.state.step

    # --- the end ----------------------------------------------------------------------
    def result(
        self,
        final: ModelState,
        params: np.ndarray,
        bn_state,
        test_acc: float,
        wall: float,
        steps_run: int,
    ) -> TrainResult:
        """The TrainResult (`final`: the servers' last state; `params`, `bn_state`: the kept
        ones, tested at `test_acc`), with the run's hparams logged; closes the logs."""
        s, h, counts = self.state, self.state.history, self.state.extra
        recorded = max(len(h["loss_history"]), 1)
        result = TrainResult(
            train_acc=h["train_acc_history"][-1] if h["train_acc_history"] else float("nan"),
            val_acc=h["val_acc_history"][-1] if h["val_acc_history"] else float("nan"),
            test_acc=test_acc,
            best_val_acc=s.best_val_acc,
            final_loss=h["loss_history"][-1] if h["loss_history"] else float("nan"),
            steps=s.step,
            epochs=self.plan.epochs_ended(s.step),
            samples_per_s=steps_run * self.job.train.batch_size / wall,
            wall_s=wall,
            logdir=self.job.metrics.logdir,
            checkpoint=self.checkpoint_path,
            mode=self.job.train.mode,
            transport=self.plan.transport,
            applied_gradients=int(counts.get("applied_gradients", 0)),
            dropped_gradients=int(counts.get("dropped_gradients", 0)),
            bytes_per_step=(counts.get("grad_bytes", 0) + counts.get("param_bytes", 0)) / recorded,
            grad_bytes_per_step=counts.get("grad_bytes", 0) / recorded,
            worker_steps=list(final.worker_steps),
            loss_history=list(h["loss_history"]),
            train_acc_history=list(h["train_acc_history"]),
            val_acc_history=list(h["val_acc_history"]),
            params=params,
            bn_state=bn_state,
            final_params=final.params,
        )
        self.logger.hparams(
            flat_hparams(self.job.to_dict()),
            {k: v for k, v in result.summary().items() if isinstance(v, float)},
        )
        self.close()
        return result

    def close(self) -> None:
        self.logger.close()
        self.bar.close()
