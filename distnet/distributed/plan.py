"""The run plan: what a job's run will do, decided before any actor starts (no Ray here).

From the job and the size of the training set: each worker actor's batch, how many steps
an epoch and the whole run have, the learning-rate schedule, how the synchronous steps
travel, and which completed steps end an epoch or call for a checkpoint.

    plan = RunPlan.for_job(job, train_rows=49_000, param_bytes=4 * 10**6)
    plan.steps_per_epoch, plan.total_steps, plan.transport
"""

from __future__ import annotations

from dataclasses import dataclass

from distnet.config import JobConfig, TrainConfig
from distnet.data.reader import assign_rows
from distnet.distributed import sampling
from distnet.errors import DistnetError
from distnet.schedules import Schedule


def sync_transport(train: TrainConfig) -> str:
    """How the synchronous steps travel: "mesh" (actor calls for control, TCP between the
    actors for the bytes: mesh.py) or "tasks" (ObjectRefs). Backup workers, async, SSP and
    elastic runs always use tasks."""
    # (elastic steps are Ray tasks: elastic.py)
    plain_sync = train.mode == "sync" and not train.backup_workers and not train.elastic
    return "mesh" if plain_sync and train.transport == "mesh" else "tasks"


def actor_batch_sizes(train: TrainConfig) -> list[int]:
    """Each worker actor's batch. With b backup workers there are N + b actors and any N of
    them make one global batch, so actor i takes the share of worker i mod N."""
    shares = train.worker_batch_sizes()
    return [shares[i % train.workers] for i in range(train.workers + train.backup_workers)]


@dataclass(frozen=True)
class RunPlan:
    """The shape of one run: `total_steps` synchronous(-equivalent) steps of which
    `steps_per_epoch` make an epoch; a checkpoint every `checkpoint_every` steps (0: at
    epoch ends and the end only); `transport`: how the synchronous steps travel
    (sync_transport); `param_bytes`: the flat parameters, which each computing worker reads
    per step."""

    steps_per_epoch: int
    total_steps: int
    schedule: Schedule
    transport: str
    checkpoint_every: int
    param_bytes: int

    @classmethod
    def for_job(cls, job: JobConfig, train_rows: int, param_bytes: int) -> RunPlan:
        """The plan of `job` on a training set of `train_rows` images, for a model of
        `param_bytes`."""
        t, o = job.train, job.optim
        actors = t.workers + t.backup_workers
        if actors > train_rows:
            raise DistnetError(f"more workers ({actors}) than training images ({train_rows})")
        worker_rows = [
            stop - start
            for start, stop in (assign_rows(train_rows, i, actors) for i in range(actors))
        ]
        per_epoch = sampling.steps_per_epoch(worker_rows, actor_batch_sizes(t))
        total = per_epoch * t.num_epochs
        schedule = Schedule(
            kind=o.schedule,
            base_lr=o.learning_rate,
            steps_per_epoch=per_epoch,
            total_steps=total,
            lr_decay=o.lr_decay,
            warmup_steps=o.warmup_steps,
            step_size_epochs=o.step_size_epochs,
            step_gamma=o.step_gamma,
            min_lr=o.min_lr,
        )
        if t.max_steps is not None:  # stops the run early; the schedule keeps its shape
            total = min(total, t.max_steps)
        transport = sync_transport(t)
        return cls(per_epoch, total, schedule, transport, job.checkpoint.every_steps, param_bytes)

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, step in epoch) of the 0-based step `step`."""
        return divmod(step, self.steps_per_epoch)

    def epoch_of(self, step: int) -> int:
        """The epoch a checkpoint at `step` completed steps is in."""
        return step // self.steps_per_epoch

    def ends_epoch(self, done: int) -> bool:
        """Whether `done` completed steps end an epoch (or the run)."""
        return done % self.steps_per_epoch == 0 or done == self.total_steps

    def epochs_ended(self, done: int) -> int:
        """How many epoch ends (each with its evaluation) `done` completed steps passed."""
        return -(-done // self.steps_per_epoch)

    def at_boundary(self, done: int) -> bool:
        """Whether `done` completed steps end an epoch or call for a checkpoint."""
        every = self.checkpoint_every
        return self.ends_epoch(done) or bool(every and done % every == 0)
