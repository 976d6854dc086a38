"""Framework overhead per synchronous step on a real multi-node Ray cluster on this machine.

    python -m benchmarks.multinode_overhead --repeats 3

tests/raycluster.py starts docker-compose.yml's head and two worker nodes (1 CPU each,
127.0.0.2-4, token auth, a loopback-only network namespace); a driver inside the namespace
trains the tiny overhead-probe net (fc hidden [10], global batch 2, 2 workers, sgd:
compute is negligible, so a step is the framework's cost) for STEPS steps with each of:
the mesh with shared memory (the nodes share this machine, so their actors map each
other's regions), the mesh over TCP only (as between machines) and Ray tasks; in an order
that rotates between repeats. A step's time is the interval between booked steps
(`on_step`), the first WARMUP dropped; prints the median and the 10th percentile of each
variant over all repeats, and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STEPS, WARMUP = 400, 100
VARIANTS = {
    "mesh, shared memory": {"transport": "mesh"},
    "mesh, TCP only": {"transport": "mesh", "shared_memory": False},
    "tasks": {"transport": "tasks"},
}


def job(data: str, out: Path, train: dict) -> dict:
    return {
        "name": "overhead",
        "seed": 0,
        "data": {"path": data},
        "model": {"kind": "fc", "hidden_dims": [10]},
        "optim": {"update_rule": "sgd", "learning_rate": 1e-3},
        "train": {
            "num_epochs": 100,
            "max_steps": STEPS,
            "batch_size": 2,
            "workers": 2,
            "num_train_samples": 10,
            **train,
        },
        "checkpoint": {"dir": f"{out}/ckpt"},
        "metrics": {"logdir": f"{out}/runs"},
    }


def child(job_file: str, address: str, out: str) -> None:
    """The driver, inside the cluster's namespace: train and write the step intervals."""
    from distnet.config import load_job
    from distnet.distributed.driver import train

    marks: list[float] = []
    train(
        load_job(job_file),
        address=address,
        overwrite=True,
        progress=False,
        on_step=lambda _event: marks.append(time.perf_counter()),
    )
    gaps = [b - a for a, b in pairwise(marks)][WARMUP:]
    Path(out).write_text(json.dumps(gaps))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return
    sys.path.insert(0, str(REPO / "tests"))
    from datagen import make_prepared_dataset
    from killer import write_job_file
    from raycluster import ray_cluster

    names = list(VARIANTS)
    gaps: dict[str, list[float]] = {name: [] for name in names}
    loads: list[float] = []
    with ray_cluster(workers=2) as cluster:
        data = make_prepared_dataset(cluster.shared / "data", shards=4, num_val=60)
        env = cluster.client_env() | {"RAY_AUTH_MODE": "token", "PYTHONPATH": str(REPO)}
        for repeat in range(args.repeats):
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                out = cluster.shared / f"r{repeat}-{names.index(name)}"
                out.mkdir()
                job_file = write_job_file(job(data, out, VARIANTS[name]), out / "job.toml")
                loads.append(os.getloadavg()[0])
                argv = [sys.executable, "-m", "benchmarks.multinode_overhead", "--child"]
                argv += [str(job_file), cluster.address, str(out / "gaps.json")]
                subprocess.run(cluster.netns.argv(argv), env=env, cwd=REPO, check=True, timeout=600)
                got = json.loads((out / "gaps.json").read_text())
                gaps[name] += got
                print(
                    f"repeat {repeat} {name}: median {statistics.median(got) * 1e3:.2f} ms",
                    file=sys.stderr,
                )
    print(f"\n1-min load average {min(loads):.1f} to {max(loads):.1f}; {args.repeats} repeats")
    print(f"of {STEPS - WARMUP - 1} steps each\n")
    print("| transport | step ms, median | step ms, p10 |")
    print("|---|---|---|")
    for name, values in gaps.items():
        p10 = statistics.quantiles(values, n=10)[0]
        print(f"| {name} | {statistics.median(values) * 1e3:.2f} | {p10 * 1e3:.2f} |")


if __name__ == "__main__":
    main()
