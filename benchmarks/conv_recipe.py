"""Time one end-to-end training command and watch its actors' memory: the recipe's check
(issue 14: `distnet train jobs/cifar10_convnet_best.toml --workers 2` to 70% test accuracy
in 15 minutes, start-up included).

    python -m benchmarks.conv_recipe -- distnet train jobs/cifar10_convnet_best.toml --workers 2

The command runs as a child, its output passed through. Every --interval seconds this
records the machine's load average and the resident memory (VmRSS) of each gradient worker
and parameter server the command started (Ray's actor processes, found among its
descendants by their process titles), so the record shows whether a worker's memory stays
flat across the epochs. At the end it appends one JSON line to --out: the command, UTC
start and end, wall seconds, exit code, the load samples and each actor's RSS samples and
peak (VmHWM).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROLES = {"ray::GradientWorker": "worker", "ray::ParameterServer": "server"}


def actors(root: psutil.Process) -> dict[int, str]:
    """pid -> role of the gradient workers and parameter servers below `root`."""
    found = {}
    for proc in root.children(recursive=True):
        try:
            title = " ".join(proc.cmdline())
        except psutil.Error:  # exited meanwhile
            continue
        for prefix, role in ROLES.items():
            if title.startswith(prefix):
                found[proc.pid] = role
    return found


def memory_mb(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) of a process in MB, or None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith("Vm"))
    except OSError:
        return None
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def watch(command: list[str], interval: float) -> dict:
    started = datetime.datetime.now(datetime.UTC)
    clock = time.perf_counter()
    child = subprocess.Popen(command)
    root = psutil.Process(child.pid)
    loads, samples, peaks, roles = [], {}, {}, {}
    while child.poll() is None:
        elapsed = round(time.perf_counter() - clock, 1)
        loads.append((elapsed, os.getloadavg()[0]))
        roles.update(actors(root))
        for pid in roles:
            mem = memory_mb(pid)
            if mem is not None:
                samples.setdefault(pid, []).append((elapsed, round(mem[0], 1)))
                peaks[pid] = round(mem[1], 1)
        try:
            child.wait(timeout=interval)
        except subprocess.TimeoutExpired:
            pass
    return {
        "command": command,
        "start_utc": started.isoformat(timespec="seconds"),
        "end_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - clock, 1),
        "returncode": child.returncode,
        "load_1min": loads,
        "actors": [
            {
                "pid": pid,
                "role": roles[pid],
                "rss_mb": samples.get(pid, []),
                "peak_rss_mb": peaks.get(pid),
            }
            for pid in sorted(roles)
        ],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between samples")
    parser.add_argument("--out", default=str(HERE / "conv_recipe_results.jsonl"))
    parser.add_argument("command", nargs="+", help="the command to run, after --")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be > 0")
    record = watch(args.command, args.interval)
    with open(args.out, "a") as f:
        f.write(json.dumps(record) + "\n")
    loads = [load for _, load in record["load_1min"]]
    print(
        f"conv_recipe: exit {record['returncode']}, {record['wall_s']:.0f} s wall "
        f"({record['start_utc']} to {record['end_utc']}), load {min(loads, default=0):.1f}"
        f" to {max(loads, default=0):.1f}",
        file=sys.stderr,
    )
    for actor in record["actors"]:
        rss = [mb for _, mb in actor["rss_mb"]]
        if rss:
            print(
                f"  {actor['role']} {actor['pid']}: RSS {rss[0]:.0f} MB first sample, "
                f"{rss[-1]:.0f} MB last, peak {actor['peak_rss_mb']:.0f} MB "
                f"({len(rss)} samples)",
                file=sys.stderr,
            )
    return record["returncode"]


if __name__ == "__main__":
    sys.exit(main())
