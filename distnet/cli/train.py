"""Train a job data-parallel on Ray (a local Ray on 127.0.0.1 unless --address is given).

JOB is a job file or the name of a ready job (`distnet train large`; `--list` shows them);
without one, the ready job two_layer (the CS231n two-layer net). The dataset is prepared
first if it is not there yet (downloaded, or from --source).

--print-config prints the job as it will run (file, --set and flags resolved) as TOML;
--dry-run makes every check a run makes before Ray starts (the job, the dataset's shards,
the checkpoint directory against --resume/--overwrite) and prints the plan, starting,
preparing and deleting nothing.

--trace FILE writes the run's timeline (Chrome's Trace Event Format: open it in Perfetto,
ui.perfetto.dev, or chrome://tracing): the driver's submissions, reads, books, evaluations
and checkpoints, each worker's data, forward and backward, each server shard's update, one
track per actor. It is written at the end, also when the run is interrupted or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a job on Ray",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "job", nargs="?", help="job file (TOML) or a ready job's name (default: two_layer)"
    )
    p.add_argument("--list", action="store_true", help="list the ready jobs and exit")
    p.add_argument("--workers", type=int, metavar="N", help="gradient workers (train.workers)")
    p.add_argument(
        "--address",
        help="Ray cluster to join (auto, ray://..., host:port); "
        "default: $RAY_ADDRESS, else a local Ray",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a job setting (repeatable)",
    )
    p.add_argument("--source", help="CIFAR-10 tarball (file or URL) to prepare from (data.source)")
    p.add_argument("--md5", help="expected MD5 of --source (data.md5)")
    p.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint of this job"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start again, deleting this job's earlier checkpoints",
    )
    p.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object on stdout"
    )
    p.add_argument(
        "--dashboard",
        action="store_true",
        help="start the local Ray's dashboard on 127.0.0.1 to watch the actors",
    )
    p.add_argument(
        "--trace",
        metavar="FILE",
        help="write the run's timeline as Chrome-trace/Perfetto JSON to FILE",
    )
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved job as TOML and exit"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the job, its dataset and checkpoints, print the plan, and exit",
    )
    p.set_defaults(run=run)


def run(args) -> int:
    from distnet.config import load_job
    from distnet.errors import DistnetError
    from distnet.job_files import describe, find_job, job_to_toml, ready_jobs

    if args.list:
        for name, path in ready_jobs().items():
            print(f"{name:<18} {describe(path)}")
        return 0
    overrides = list(args.overrides)
    for key, value in (
        ("train.workers", args.workers),
        ("data.source", args.source),
        ("data.md5", args.md5),
    ):
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    job = load_job(find_job(args.job) if args.job else None, overrides)
    if args.print_config:
        print(job_to_toml(job), end="")
        return 0
    start = {"resume": args.resume, "overwrite": args.overwrite}
    if args.trace:  # a trace that could not be written is one line before anything runs
        from distnet.distributed.trace import check_trace_path

        check_trace_path(args.trace)
    if args.dry_run:
        from distnet.distributed.preflight import dry_run

        print("\n".join(dry_run(job, address=args.address, **start)))
        return 0

    if args.dashboard and (args.address or os.environ.get("RAY_ADDRESS")):
        raise DistnetError(
            "--dashboard starts the dashboard of a local Ray; a cluster "
            "serves its own (port 8265 of its head)"
        )
    from distnet.distributed.driver import train

    trace = None
    if args.trace:
        from distnet.distributed.trace import Trace

        trace = Trace(job)
    ending = "failed"
    try:
        result = train(
            job,
            address=args.address,
            dashboard=args.dashboard,
            hooks=trace.hooks() if trace else None,
            **start,
        )
        ending = "finished"
    except KeyboardInterrupt:
        ending = "interrupted"
        raise
    finally:
        if trace is not None:
            print(f"trace: {trace.write(args.trace, ending)}", file=sys.stderr)
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(_describe(summary), file=sys.stdout)
    return 0


def _describe(s: dict) -> str:
    return (
        f"train acc {s['train_acc']:.3f}  val acc {s['val_acc']:.3f} "
        f"(best {s['best_val_acc']:.3f})  test acc {s['test_acc']:.3f}\n"
        f"{s['steps']} steps, {s['epochs']} epochs in {s['wall_s']:.1f} s "
        f"({s['samples_per_s']:,.0f} samples/s), final loss {s['final_loss']:.4f}\n"
        f"logs: {s['logdir']}  (tensorboard --logdir {s['logdir']})\n"
        f"checkpoint: {s['checkpoint']}"
    )
