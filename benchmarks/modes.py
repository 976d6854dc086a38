"""Consistency models compared by time to a target validation accuracy, with a straggler.

The seed's two-layer net (jobs/two_layer.toml: SGD 1e-3, global batch 100) on CIFAR-10
with 2 gradient workers, worker 0 slowed down by `--delay` seconds per step
(the test hook `Hooks.worker_delay_s`), trained in each mode until its validation accuracy reaches
`--target`:

    sync          every step waits for the straggler
    sync+backup   3 workers, each step applies the first 2 gradients (backup_workers = 1)
    async         every gradient applied at once, nobody waits
    ssp           async, but no worker more than --staleness steps ahead of the slowest
    sync-nodelay  the reference: sync without the straggler

Validation accuracy is measured every `--eval-every` steps from inside `on_step`; the
clock starts at the first completed step (Ray and actor start-up excluded) and the
evaluations' own time is taken off it (the trainer's epoch-end evaluations stay in).
Modes run interleaved, `--repeats` times, all on one local Ray instance.

    python -m benchmarks.modes --data /tmp/cifar-arrow
    python -m benchmarks.modes --data /tmp/cifar-arrow --out benchmarks/modes_results.jsonl
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.harness.results import append_run

MODES: dict[str, dict] = {
    "sync": {},
    "sync+backup": {"backup_workers": 1},
    "async": {"mode": "async"},
    "ssp": {"mode": "ssp"},  # staleness from --staleness
    "sync-nodelay": {},  # no straggler
}


class TargetReached(Exception):
    """Raised from on_step to end a run once it has reached the target accuracy."""


@dataclass
class ModeRun:
    mode: str
    reached: bool
    seconds: float  # training time until the target (or the step limit)
    steps: int  # synchronous-equivalent steps
    gradients: int  # worker gradients applied
    dropped: int  # late gradients dropped (backup workers)
    val_acc: float  # at the last evaluation
    curve: list[tuple[float, int, float]] = field(default_factory=list)  # (s, step, val)


def run_mode(mode: str, args) -> ModeRun:
    import distnet
    from distnet.config import load_job
    from distnet.distributed.hooks import Hooks

    settings = dict(MODES[mode])
    if settings.get("mode") == "ssp":
        settings["staleness"] = args.staleness
    hooks = Hooks(worker_delay_s=0.0 if mode == "sync-nodelay" else args.delay)
    counts = {"gradients": 0, "dropped": 0}
    clock = {"start": None, "eval_s": 0.0}
    curve: list[tuple[float, int, float]] = []

    def on_step(event) -> None:
        now = time.perf_counter()
        if clock["start"] is None:
            clock["start"] = now
        counts["gradients"] += len(event.gradients)
        counts["dropped"] += event.dropped
        done = event.step + 1
        if done % args.eval_every and done < args.max_steps:
            return
        acc = event.group.evaluate("val", 0)
        curve.append((now - clock["start"] - clock["eval_s"], done, acc))
        clock["eval_s"] += time.perf_counter() - now
        if acc >= args.target:
            raise TargetReached

    with tempfile.TemporaryDirectory(prefix="distnet-modes-") as tmp:
        overrides = [
            f"data.path={json.dumps(args.data)}",
            "train.workers=2",
            f"train.max_steps={args.max_steps}",
            "train.num_epochs=100",
            f"checkpoint.dir={json.dumps(tmp + '/ck')}",
            f"metrics.logdir={json.dumps(tmp + '/tb')}",
            "metrics.histograms=false",
        ]
        overrides += [f"train.{k}={json.dumps(v)}" for k, v in settings.items()]
        job = load_job(args.job, overrides)
        try:
            distnet.train(job, progress=False, overwrite=True, on_step=on_step, hooks=hooks)
        except TargetReached:
            pass
    gc.collect()  # the aborted run's actors go with their handles
    seconds, steps, acc = curve[-1]
    return ModeRun(
        mode, acc >= args.target, seconds, steps, counts["gradients"], counts["dropped"], acc, curve
    )


def table(runs: list[ModeRun], target: float) -> str:
    header = (
        f"| mode | time to {target:.0%} val (s) | steps | gradients applied | "
        f"dropped | runs reaching it |"
    )
    lines = [header, "|---|---|---|---|---|---|"]
    by_mode: dict[str, list[ModeRun]] = {}
    for r in runs:
        by_mode.setdefault(r.mode, []).append(r)
    for mode, rs in by_mode.items():
        ok = [r for r in rs if r.reached]
        if ok:
            secs = statistics.median(r.seconds for r in ok)
            spread = (max(r.seconds for r in ok) - min(r.seconds for r in ok)) / 2
            time_s = f"{secs:.1f} ± {spread:.1f}" if len(ok) > 1 else f"{secs:.1f}"
            steps = statistics.median(r.steps for r in ok)
            grads = statistics.median(r.gradients for r in ok)
            dropped = statistics.median(r.dropped for r in ok)
            lines.append(
                f"| {mode} | {time_s} | {steps:.0f} | {grads:.0f} | {dropped:.0f} | "
                f"{len(ok)}/{len(rs)} |"
            )
        else:
            lines.append(f"| {mode} | not reached | | | | 0/{len(rs)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="prepared CIFAR-10 (distnet data)")
    parser.add_argument("--job", default=str(Path(__file__).parents[1] / "jobs/two_layer.toml"))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--target", type=float, default=0.40)
    parser.add_argument("--delay", type=float, default=0.02, help="worker 0's delay per step")
    parser.add_argument("--staleness", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--max-steps", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--out",
        help="append every run (with its curve) to this JSON Lines "
        "file (benchmarks/harness/results.py)",
    )
    args = parser.parse_args(argv)
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")

    from distnet.distributed.runtime import init_local_ray

    init_local_ray(num_cpus=4, log_to_driver=False)
    runs = []
    for repeat in range(args.repeats):
        order = args.modes[repeat % len(args.modes) :] + args.modes[: repeat % len(args.modes)]
        for mode in order:
            run = run_mode(mode, args)
            runs.append(run)
            print(
                f"{mode}: {'reached' if run.reached else 'stopped at'} {run.val_acc:.3f} "
                f"after {run.seconds:.1f} s, {run.steps} steps, {run.gradients} gradients, "
                f"{run.dropped} dropped",
                flush=True,
            )
    print(table(runs, args.target))
    if args.out:
        append_run(Path(args.out), {"date": started, "args": vars(args)}, [asdict(r) for r in runs])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
