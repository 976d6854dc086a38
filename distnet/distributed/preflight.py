"""What a run checks before Ray starts, so that a refused start costs nothing (no ray here).

`check_checkpoint_dir` decides what a run may do with its checkpoint directory (train calls
it first); `dry_run` is `distnet train --dry-run`: every check a run makes before its
actors start, and the plan of the run, with nothing prepared, started or deleted.

    check_checkpoint_dir(job.checkpoint.dir, resume=False, overwrite=False)
    print("\\n".join(dry_run(job)))
"""

from __future__ import annotations

import os
from pathlib import Path

from distnet.checkpoint import (
    CheckpointError,
    CheckpointMismatch,
    ModelSpec,
    list_checkpoints,
    load_checkpoint,
)
from distnet.config import JobConfig
from distnet.distributed import budget
from distnet.errors import DistnetError

# What a checkpoint must share with the job it continues.
RESUME_KEYS = ("seed", "model", "optim", "data")


def check_checkpoint_dir(directory: str | os.PathLike, resume: bool, overwrite: bool) -> list[Path]:
    """The checkpoints in `directory`, oldest first, once the run may start with them:
    DistnetError for --resume with --overwrite, --resume without a checkpoint, and a fresh
    run on an earlier run's checkpoints (continue it, or start again with --overwrite)."""
    if resume and overwrite:
        raise DistnetError("--resume and --overwrite exclude each other")
    existing = list_checkpoints(directory)
    if resume and not existing:
        raise DistnetError(f"--resume: no checkpoint in {directory}")
    if existing and not resume and not overwrite:
        raise DistnetError(
            f"{directory} holds checkpoints of an earlier run; continue it "
            f"with --resume, or start again with --overwrite"
        )
    return existing


def check_resumable(job: JobConfig, config: dict, directory: str | os.PathLike) -> None:
    """DistnetError unless checkpoints written by the job `config` can continue `job`."""
    mine = job.to_dict()
    for key in RESUME_KEYS:
        if config.get(key) != mine[key]:
            raise DistnetError(
                f"--resume: the checkpoints in {directory} were written "
                f"with another [{key}] than this job's"
            )


def dry_run(
    job: JobConfig, *, address: str | None = None, resume: bool = False, overwrite: bool = False
) -> list[str]:
    """The checks `train(job, ...)` makes before Ray starts, and the run's plan, as lines
    of text. Reads the dataset and the checkpoints; writes, prepares and starts nothing."""
    from distnet.data import fs
    from distnet.data.check import check_dataset
    from distnet.data.manifest import MANIFEST_NAME
    from distnet.distributed.plan import RunPlan
    from distnet.models import build_model

    existing = check_checkpoint_dir(job.checkpoint.dir, resume, overwrite)
    machine = budget.machine_memory()
    budget.estimate(job).check_driver(machine)  # as train: before the model is built
    model = build_model(job.model, seed=job.seed)
    params = model.params.vector
    lines = [
        (
            f"job          {job.name}: {type(model).__name__}, {params.size:,} parameters "
            f"({params.nbytes / 2**20:.1f} MiB {params.dtype})"
        )
    ]

    t, data = job.train, job.data
    actors = t.workers + t.backup_workers
    local = not (address or os.environ.get("RAY_ADDRESS"))
    filesystem, root = fs.resolve(data.path)
    plan, eval_rows = None, None
    if fs.exists(filesystem, fs.join(root, MANIFEST_NAME)):
        manifest = check_dataset(data.path, num_workers=actors, checksums=data.verify)
        rows = {name: split.rows for name, split in manifest.splits.items()}
        eval_rows = max(-(-n // actors) for n in rows.values())  # as train: a worker's share
        lines.append(
            f"dataset      {data.path}: "
            + " / ".join(f"{n:,} {name}" for name, n in rows.items())
            + " images, shards checked"
        )
        budget.check_batch(job, rows["train"])
        plan = RunPlan.for_job(job, rows["train"], params.nbytes)
    else:
        lines.append(
            f"dataset      {data.path}: not prepared yet; the run prepares it from "
            f"{_source(data.source)}"
        )

    batches = " + ".join(map(str, t.worker_batch_sizes()))
    workers = (
        f"{t.min_workers}..{t.max_workers} elastic workers, {t.workers} blocks"
        if t.elastic
        else f"{t.workers} workers"
    )
    run = (
        f"run          {workers} ({batches} images a step"
        + (f", {t.backup_workers} backup" if t.backup_workers else "")
        + f"), "
        f"{t.servers} parameter server{'s' if t.servers > 1 else ''}, mode {t.mode}"
    )
    if plan is None:
        lines.append(run + f", {t.num_epochs} epochs (steps: once the dataset is prepared)")
    else:
        lines.append(
            run + f", transport {plan.transport}; {plan.steps_per_epoch:,} steps an "
            f"epoch, {plan.total_steps:,} steps"
        )
    lines.append(_memory(budget.estimate(job, eval_rows), machine if local else None))
    lines.append(
        f"checkpoints  {job.checkpoint.dir}: "
        + _checkpoint_plan(job, existing, resume, plan, model)
    )
    lines.append(f"logs         {job.metrics.logdir}  (tensorboard --logdir {job.metrics.logdir})")
    lines.append("dry run: everything checked, nothing started")
    return lines


def _memory(need, machine: int | None) -> str:
    """The memory line; a local run's actors are checked against this machine (the run
    checks them again against what its Ray reports), a cluster's when the run joins it."""
    line = f"memory       at least {budget.format_bytes(need.cluster)} for the actors ({need})"
    if machine is None:
        return line + "; checked against the cluster's memory when the run joins it"
    need.check_cluster(machine, machine)
    return line + f", this machine has {budget.format_bytes(machine)}"


def _source(source: str | None) -> str:
    """Where the dataset would come from; a local tarball that is not there is an error."""
    from distnet.data.errors import DataError
    from distnet.data.prepare import OFFICIAL_URL

    if source is None:
        return f"a download of {OFFICIAL_URL}"
    if "://" not in source and not Path(source).expanduser().is_file():
        raise DataError(f"source {source} does not exist or is not a file")
    return source


def _checkpoint_plan(job: JobConfig, existing: list[Path], resume: bool, plan, model) -> str:
    if not resume:
        if existing:
            return f"--overwrite deletes the {len(existing)} checkpoints there"
        return "a fresh run"
    spec = ModelSpec.like(
        model.params.vector, model.get_bn_state(), max_step=plan.total_steps if plan else None
    )
    for path in reversed(existing):  # the newest intact one, as the run takes it
        try:
            state = load_checkpoint(path)
        except CheckpointMismatch:
            raise
        except CheckpointError:
            continue  # damaged: the run moves it aside and takes an older one
        check_resumable(job, state.config, job.checkpoint.dir)  # another job's first
        spec = ModelSpec.like(
            model.params.vector, model.get_bn_state(), max_step=plan.total_steps if plan else None
        )
        spec.check(state, f"--resume: {job.checkpoint.dir}")
        return f"continues {path.name} (step {state.step:,}, epoch {state.epoch})"
    raise DistnetError(f"--resume: no intact checkpoint in {job.checkpoint.dir}")
