"""Where a `distnet.train` step spends its time: py-spy on the driver, the parameter
server and the gradient workers during the steady state of one run.

    python -m benchmarks.profile --config large --workers 2 --out /tmp/prof
    python -m benchmarks.profile --config tiny --steps 400 --svg

Writes py-spy's collapsed stacks (or flame graphs with --svg) per process into --out and
prints, per process, the share of samples under each function of interest. Sampling
includes idle threads' time only for the thread that runs Python code (the main one), so
the shares add up to the process's wall time.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness.configs import CONFIGS, TINY, warmup_steps

# Functions whose inclusive share is worth reading, per process kind (substring match on
# py-spy's "function (file:line)" frames).
FOCUS = {
    "worker": [
        "compute_gradients",
        "_load (distnet",
        "take (distnet",
        "normalize (distnet",
        "loss (distnet",
        "affine_backward",
        "affine_forward",
        "batchnorm",
        "dropout_forward",
        "softmax_loss",
        "serializ",
        "deserializ",
        "main_loop",
        "store_task_outputs",
        "get_objects",
    ],
    "server": [
        "apply_gradients",
        "block (distnet/optim",
        "adam (distnet",
        "sgd (distnet",
        "_own",
        "serializ",
        "deserializ",
        "main_loop",
        "store_task_outputs",
    ],
    "driver": [
        "_loop",
        "_complete",
        "step (distnet/distributed/group",
        "RunLogger.step",
        "add_scalar",
        "ray.get",
        "get_objects",
        "remote",
        "on_step",
        "set_postfix",
        "_submit",
    ],
}


def record(
    pids: dict[str, int], out: Path, rate: int, svg: bool, native: bool
) -> list[subprocess.Popen]:
    procs = []
    for role, pid in pids.items():
        fmt, ext = ("flamegraph", "svg") if svg else ("raw", "txt")
        procs.append(
            subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(rate),
                    "--format",
                    fmt,
                    "--idle",
                    "-o",
                    str(out / f"{role}.{ext}"),
                ]
                + (["--native"] if native else ["--nonblocking"]),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def shares(path: Path, focus: list[str]) -> tuple[int, list[tuple[str, float]]]:
    """Samples in a collapsed-stack file, and the inclusive share of each focus string."""
    total, hits = 0, Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if (
            not stack.startswith("MainThread")
            and "(idle)" not in stack
            and not any(f in stack for f in ("main_loop", "_loop", "compute_gradients"))
        ):
            continue  # background threads (Ray's, tqdm's) would double-count wall time
        n = int(count)
        total += n
        for name in focus:
            if name in stack:
                hits[name] += n
    return total, [(name, hits[name] / total if total else 0.0) for name in focus]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default="large", choices=[*CONFIGS, TINY.name])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, help="default: the config's full run length")
    p.add_argument("--data", default=os.path.expanduser("~/.cache/distnet/cifar10"))
    p.add_argument("--out", default=None, help="directory for the py-spy files")
    p.add_argument("--rate", type=int, default=200, help="samples per second")
    p.add_argument("--svg", action="store_true", help="flame graphs instead of stacks")
    p.add_argument(
        "--native",
        action="store_true",
        help="include C/C++ frames (numpy, BLAS, Ray's core worker); pauses the "
        "processes to sample, so steps run slower",
    )
    args = p.parse_args(argv)
    config = TINY if args.config == TINY.name else CONFIGS[args.config]
    steps = args.steps or config.steps
    out = Path(args.out or tempfile.mkdtemp(prefix="distnet-profile-"))
    out.mkdir(parents=True, exist_ok=True)

    import distnet
    from benchmarks.harness import dist_run
    from distnet.config import JobConfig

    dist_run.start_ray(os.cpu_count() or 2)
    spies: list[subprocess.Popen] = []
    marks: list[float] = []

    def on_step(event) -> None:
        marks.append(time.perf_counter())
        if event.step == warmup_steps(steps):
            pids = {"driver": os.getpid()}
            pids.update({f"server{i}": pid for i, pid in enumerate(event.group.server_pids())})
            pids.update({f"worker{i}": pid for i, pid in enumerate(event.group.worker_pids())})
            spies.extend(record(pids, out, args.rate, args.svg, args.native))
            marks.clear()
        if event.step == steps - 1:
            for spy in spies:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
            for spy in spies:
                spy.wait(timeout=60)

    with tempfile.TemporaryDirectory() as tmp:
        job = JobConfig.from_dict(
            config.job_dict(workers=args.workers, data=args.data, tmp=tmp, max_steps=steps)
        )
        distnet.train(job, progress=False, overwrite=True, on_step=on_step)
    step_ms = 1e3 * (marks[-1] - marks[0]) / max(len(marks) - 1, 1)
    print(
        f"{config.name}, {args.workers} workers: {step_ms:.2f} ms per step while profiled; "
        f"files in {out}"
    )
    if args.svg:
        return 0
    for path in sorted(out.glob("*.txt")):
        kind = path.stem.rstrip("0123456789")
        total, found = shares(path, FOCUS[kind])
        print(f"\n{path.stem} ({total} samples)")
        for name, share in found:
            if share >= 0.005:
                print(f"  {share:6.1%}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
