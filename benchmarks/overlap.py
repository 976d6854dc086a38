"""The overlapped update (train.update = "overlapped", docs/overlap.md) against the
synchronous one, side by side in one run.

    python -m benchmarks.overlap throughput --configs large three_layer_conv --repeats 3
    python -m benchmarks.overlap convergence --jobs two_layer large

`throughput`: for each repeat, config and (update, workers) in an order that rotates
between repeats, one benchmarks.throughput-style distnet measurement (median step time
after warm-up, and the TensorBoard time split); prints the medians over repeats and the
scaling 1 -> 2 workers. `convergence`: trains each ready job to the end with both updates
(interleaved over repeats) and prints the steps and the wall time after which the
validation accuracy first reached each target (evaluations at epoch ends).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import dist_run
from benchmarks.harness.configs import CONFIGS, warmup_steps

UPDATES = ("sync", "overlapped")
TARGETS = {"two_layer": (0.40, 0.45), "large": (0.45, 0.55)}


def throughput(args) -> None:
    runs = [(u, w) for u in UPDATES for w in (1, 2)]
    rates: dict = {}
    splits: dict = {}
    loads: list[float] = []
    for repeat in range(args.repeats):
        for name in args.configs:
            config = CONFIGS[name]
            order = runs[repeat % len(runs) :] + runs[: repeat % len(runs)]
            for update, workers in order:
                loads.append(os.getloadavg()[0])
                result = dist_run.run(config, workers, config.steps, args.data, update)
                step = statistics.median(result.step_s[warmup_steps(config.steps) :])
                rates.setdefault((name, update, workers), []).append(config.batch_size / step)
                splits.setdefault((name, update, workers), []).append(result.split_ms)
                print(
                    f"repeat {repeat} {name} {update} {workers}w: "
                    f"{config.batch_size / step:,.0f} samples/s",
                    file=sys.stderr,
                )
    print(f"\n1-min load average: {min(loads):.1f} to {max(loads):.1f}; {args.repeats} repeats\n")
    print(
        "| config | update | 1w samples/s | 2w samples/s | scaling 1w→2w "
        "| 2w vs sync 1w | 2w step ms: compute max / server update / wait |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.configs:
        sync_one = statistics.median(rates[(name, "sync", 1)])
        for update in UPDATES:
            one = statistics.median(rates[(name, update, 1)])
            two = statistics.median(rates[(name, update, 2)])
            split = {
                key: statistics.median(s[key] for s in splits[(name, update, 2)])
                for key in ("compute_max_s", "server_update_s", "wait_s")
            }
            print(
                f"| {name} | {update} | {one:,.0f} | {two:,.0f} | {two / (2 * one):.0%} "
                f"| {two / (2 * sync_one):.0%} | {split['compute_max_s']:.1f} / "
                f"{split['server_update_s']:.1f} / {split['wait_s']:.1f} |"
            )


def convergence(args) -> None:
    import tomllib

    import distnet
    from distnet.config import JobConfig
    from distnet.config.job import apply_overrides
    from distnet.job_files import find_job

    reached: dict = {}
    loads: list[float] = []
    for repeat in range(args.repeats):
        for name in args.jobs:
            for update in UPDATES if repeat % 2 == 0 else UPDATES[::-1]:
                raw = tomllib.loads(find_job(name).read_text())
                with tempfile.TemporaryDirectory(prefix="distnet-overlap-") as tmp:
                    raw = apply_overrides(
                        raw,
                        [
                            f'train.update="{update}"',
                            *([f"train.num_epochs={args.epochs}"] if args.epochs else []),
                            f'data.path="{args.data}"',
                            f'checkpoint.dir="{tmp}/ckpt"',
                            f'metrics.logdir="{tmp}/runs"',
                        ],
                    )
                    job = JobConfig.from_dict(raw)
                    loads.append(os.getloadavg()[0])
                    marks: list[float] = []
                    start = time.perf_counter()
                    result = distnet.train(
                        job,
                        progress=False,
                        overwrite=True,
                        on_step=lambda e, m=marks, t0=start: m.append(time.perf_counter() - t0),
                    )
                per_epoch = result.steps // result.epochs
                for target in TARGETS[name]:
                    epoch = next(
                        (e for e, v in enumerate(result.val_acc_history, 1) if v >= target),
                        None,
                    )
                    steps = None if epoch is None else epoch * per_epoch
                    wall = None if steps is None else marks[steps - 1]
                    reached.setdefault((name, update, target), []).append((steps, wall))
                print(
                    f"repeat {repeat} {name} {update}: val {result.val_acc_history}, "
                    f"{result.wall_s:.0f} s",
                    file=sys.stderr,
                )
    print(f"\n1-min load average: {min(loads):.1f} to {max(loads):.1f}; {args.repeats} repeats\n")
    print("| job | update | target val acc | steps to reach it | wall s (median) |")
    print("|---|---|---|---|---|")
    for (name, update, target), got in reached.items():
        steps = [s for s, _ in got]
        walls = [w for _, w in got if w is not None]
        wall = f"{statistics.median(walls):.0f}" if len(walls) == len(got) else "not reached"
        print(f"| {name} | {update} | {target:.0%} | {steps} | {wall} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--configs", nargs="+", default=["large", "three_layer_conv"], choices=CONFIGS)
    c = sub.add_parser("convergence")
    c.add_argument("--jobs", nargs="+", default=["two_layer", "large"], choices=TARGETS)
    c.add_argument("--epochs", type=int, help="train.num_epochs instead of the job's")
    for p in (t, c):
        p.add_argument("--repeats", type=int, default=3)
        p.add_argument("--data", default=str(Path("~/.cache/distnet/cifar10").expanduser()))
    args = parser.parse_args(argv)
    throughput(args) if args.what == "throughput" else convergence(args)


if __name__ == "__main__":
    main()
