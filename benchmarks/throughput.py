"""Training throughput of distnet against PyTorch on CIFAR-10, interleaved and repeated.

    python -m benchmarks.throughput                 # the full run (about 40 minutes)
    python -m benchmarks.throughput --quick         # smoke check, under 3 minutes
    python -m benchmarks.throughput --configs large --repeats 5 --write
    python -m benchmarks.throughput --configs three_layer_conv recipe_conv --no-overhead \
        --threads 1 --write --section conv-results          # the conv nets (issue 14)

For each repeat, each config and each system in an order that rotates between repeats,
one measurement runs a fixed number of training steps and keeps the wall time of each;
the first fifth are warm-up. A measurement's throughput is the global batch over its
median step time; the report gives the median over repeats and the spread between them.
--write puts the tables into benchmarks/README.md and appends the raw step times to
benchmarks/results.jsonl; --tables-only renders the tables of the last run recorded there.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/throughput.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness.machine import clean_blas_env

REMOVED_OVERRIDES = clean_blas_env() if __name__ == "__main__" else {}

import argparse
import datetime
import os
import shlex
import time

from benchmarks.harness import machine, report, results
from benchmarks.harness.configs import CONFIGS, DEFAULT_CONFIGS, QUICK_CONFIGS, TINY
from benchmarks.harness.measure import SYSTEMS, Measurement, measure, summarize

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.jsonl"
SHARED_TARBALL = HERE.parent.parent / "shared" / "data" / "cifar-10-python.tar.gz"
SHARED_MD5 = "04140a4bf8b940be148901d3b3b8e5fb"
OVERHEAD_SYSTEMS = ("distnet1", "distnet2", "ddp")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"configs {', '.join(QUICK_CONFIGS)}, short runs, 1 repeat",
    )
    p.add_argument("--repeats", type=int, help="default 3 (1 with --quick)")
    p.add_argument(
        "--configs", nargs="+", choices=list(CONFIGS), help=f"default: {' '.join(DEFAULT_CONFIGS)}"
    )
    p.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    p.add_argument(
        "--steps",
        type=int,
        help="steps per measurement for every config (default: each config's own)",
    )
    p.add_argument(
        "--no-overhead",
        action="store_true",
        help=f"skip the tiny-network overhead probe ({TINY.name})",
    )
    p.add_argument(
        "--data",
        default=os.path.join(
            os.environ.get("DISTNET_CACHE") or os.path.expanduser("~/.cache/distnet"), "cifar10"
        ),
        help="prepared CIFAR-10 dataset (prepared from --source if missing)",
    )
    p.add_argument(
        "--source",
        default=str(SHARED_TARBALL) if SHARED_TARBALL.exists() else None,
        help="CIFAR-10 tarball to prepare --data from",
    )
    p.add_argument("--md5", default=SHARED_MD5, help="MD5 of --source")
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="threads of the single-process runs (numpy BLAS and PyTorch)",
    )
    p.add_argument(
        "--min-idle",
        type=float,
        default=0.7,
        help="before each measurement wait until the machine is this idle ...",
    )
    p.add_argument(
        "--max-wait",
        type=float,
        help="... for at most this many seconds (default 10, 0 with --quick)",
    )
    p.add_argument(
        "--steps-per-call",
        type=int,
        default=1,
        help="train.steps_per_call of the distnet runs (steps booked per actor call)",
    )
    p.add_argument("--label", default="", help="what was measured, e.g. the distnet commit")
    p.add_argument(
        "--write",
        action="store_true",
        help="write the tables into benchmarks/README.md, append the raw "
        "measurements to results.jsonl",
    )
    p.add_argument(
        "--section",
        default="results",
        help="with --write: the README section (between <!-- SECTION:start --> and "
        "<!-- SECTION:end -->) that takes the tables; the conv configs' run writes "
        "conv-results",
    )
    p.add_argument(
        "--tables-only",
        action="store_true",
        help="measure nothing: render the last run of results.jsonl (with "
        "--write: into the README)",
    )
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    if args.max_wait is None:
        args.max_wait = 0.0 if args.quick else 10.0
    args.configs = args.configs or list(QUICK_CONFIGS if args.quick else DEFAULT_CONFIGS)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.steps is not None and args.steps < 10:
        p.error("--steps must be at least 10 (warm-up and timing)")
    return args


def plan(args) -> list[tuple[int, str, str]]:
    """(repeat, config, system) in run order: every repeat visits every config, and the
    systems' order rotates, so slow drifts of the machine's load hit all systems alike."""
    order = []
    for repeat in range(args.repeats):
        configs = args.configs + ([] if args.no_overhead else [TINY.name])
        for i, name in enumerate(configs):
            systems = [s for s in args.systems if name != TINY.name or s in OVERHEAD_SYSTEMS]
            shift = (repeat + i) % len(systems) if systems else 0
            order += [(repeat, name, s) for s in systems[shift:] + systems[:shift]]
    return order


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.tables_only:
        run, records = results.read_runs(RESULTS)[-1]
        measurements = [Measurement(**r) for r in records]
        return _report(run, measurements, args.write, args.section)
    started, clock = datetime.datetime.now(), time.perf_counter()
    from distnet.data.prepare import ensure_dataset

    ensure_dataset(args.data, source=args.source, md5=args.md5, progress=False)
    desc = machine.describe(REMOVED_OVERRIDES)
    from benchmarks.harness import dist_run

    dist_run.STEPS_PER_CALL = args.steps_per_call
    if any(s.startswith("distnet") for s in args.systems):
        dist_run.start_ray(os.cpu_count() or 2)
    probe = (
        dist_run.probe_actor_threads() if any(s.startswith("distnet") for s in args.systems) else {}
    )

    measurements, todo = [], plan(args)
    for done, (repeat, name, system) in enumerate(todo, 1):
        config = TINY if name == TINY.name else CONFIGS[name]
        steps = args.steps or config.steps_for(args.quick)
        m = measure(
            system,
            config,
            steps,
            args.data,
            args.threads,
            repeat,
            quiet=(args.min_idle, args.max_wait),
        )
        measurements.append(m)
        status = m.error or f"{m.samples_per_s:,.0f} samples/s, step {1e3 * m.median_step_s:.2f} ms"
        print(
            f"[{done}/{len(todo)}] repeat {repeat + 1} {name} {system}: {status} "
            f"(idle before {m.idle_before:.0%}, load {m.load_avg:.1f})",
            file=sys.stderr,
            flush=True,
        )

    command = "python -m benchmarks.throughput " + shlex.join(sys.argv[1:])
    run = {
        "date": started.strftime("%Y-%m-%d %H:%M"),
        "command": command.strip(),
        "label": args.label,
        "repeats": args.repeats,
        "configs": args.configs,
        "machine": desc,
        "actor_threads": probe,
        "wall_min": (time.perf_counter() - clock) / 60,
    }
    if args.write:
        results.append_run(RESULTS, run, [m.to_json() for m in measurements])
    return _report(run, measurements, args.write, args.section)


def _report(run: dict, measurements: list[Measurement], write: bool, section: str) -> int:
    body = report.render(run, measurements, summarize(measurements))
    print(body)
    if write:
        report.write_readme(HERE / "README.md", body, section)
    return 1 if all(m.error for m in measurements) else 0


if __name__ == "__main__":
    sys.exit(main())
