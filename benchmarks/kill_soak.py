"""Soak: many seeded random kill schedules against one job, each checked like the tests.

    python -m benchmarks.kill_soak --seeds 40 [--transport mesh|tasks] [--out FILE]

For each seed: kills drawn by tests/killer.py's random_schedule (workers, servers, both,
some close enough to land in the recovery from the previous one, and on every fourth seed
a Ctrl-C followed by --resume) over the undisturbed run's duration. A run passes when no
step waited more than 60 s, a Ctrl-C ended the driver within 10 s, and the final
parameters and loss history equal the undisturbed run's bit for bit. One JSON line per
seed goes to --out; the summary table goes into benchmarks/README.md by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from datagen import make_prepared_dataset  # noqa: E402
from killer import random_schedule, read_result, run_driver, write_job_file  # noqa: E402


def job(dataset: str, root: Path, transport: str) -> dict:
    return {
        "name": "soak",
        "seed": 5,
        "data": {"path": dataset},
        "model": {
            "kind": "fc",
            "hidden_dims": [16],
            "weight_scale": 1e-2,
            "use_batchnorm": True,
            "dropout": 0.2,
        },
        "optim": {"update_rule": "adam", "learning_rate": 1e-3},
        "train": {
            "num_epochs": 40,
            "batch_size": 40,
            "workers": 2,
            "servers": 2,
            "num_train_samples": 100,
            "transport": transport,
        },
        "checkpoint": {"dir": str(root / "ckpt"), "every_steps": 4},
        "metrics": {"logdir": str(root / "runs")},
    }


def one(seed: int, job_file: Path, address: str, root: Path, clean, duration: float) -> dict:
    out = root / f"seed{seed}"
    schedule = random_schedule(seed, duration, interrupt=seed % 4 == 0)
    start = time.monotonic()
    watch = run_driver(job_file, address, out, schedule, seed=seed)
    record = {
        "seed": seed,
        "schedule": [(k.at_s, k.target) for k in schedule],
        "fired": watch.fired,
        "max_gap_s": round(watch.max_gap_s, 2),
        "interrupt_exit_s": watch.interrupt_exit_s,
        "hung": watch.hung,
    }
    if watch.interrupt_exit_s is not None and not watch.hung:
        watch = run_driver(job_file, address, out, resume=True)
        record["hung"] = watch.hung
    record["returncode"] = watch.returncode
    record["wall_s"] = round(time.monotonic() - start, 1)
    identical = False
    if watch.returncode == 0:
        final, _, summary = read_result(out)
        identical = bool(
            np.array_equal(final, clean[0]) and summary["loss_history"] == clean[2]["loss_history"]
        )
    record["identical"] = identical
    exit_ok = record["interrupt_exit_s"] is None or record["interrupt_exit_s"] <= 10
    record["ok"] = identical and not record["hung"] and record["max_gap_s"] <= 60 and exit_ok
    if not record["ok"]:
        record["stderr_tail"] = watch.stderr[-2000:]
        record["stacks"] = watch.stacks[-4000:]
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--transport", choices=["mesh", "tasks"], default="mesh")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/kill_soak.jsonl"))
    args = parser.parse_args(argv)

    import ray

    from distnet.distributed.runtime import init_local_ray

    init_local_ray(num_cpus=4, log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    root = Path(tempfile.mkdtemp(prefix="distnet-soak-"))
    dataset = make_prepared_dataset(
        root / "data", shards=4, n_train_per_batch=60, n_test=50, num_val=60
    )
    job_file = write_job_file(job(dataset, root, args.transport), root / "job.toml")
    start = time.monotonic()
    watch = run_driver(job_file, address, root / "clean")
    assert watch.returncode == 0, watch.stderr
    duration = time.monotonic() - start
    clean = read_result(root / "clean")
    print(f"undisturbed run: {duration:.1f} s, {watch.steps} steps", flush=True)
    passed = 0
    with args.out.open("a") as sink:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            record = one(seed, job_file, address, root, clean, duration * 0.8)
            record |= {"transport": args.transport, "when": time.strftime("%Y-%m-%d %H:%M")}
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            passed += record["ok"]
            print(
                f"seed {seed}: {'ok' if record['ok'] else 'FAIL'} fired={record['fired']} "
                f"max_gap={record['max_gap_s']}s exit={record['interrupt_exit_s']} "
                f"wall={record['wall_s']}s",
                flush=True,
            )
    print(f"{passed}/{args.seeds} schedules passed")
    ray.shutdown()
    return 0 if passed == args.seeds else 1


if __name__ == "__main__":
    sys.exit(main())
