"""What the single-process and PyTorch runners share: their command line, the training
arrays, and how they hand their step times back to the orchestrator.

Each runner is a child process (`python -m benchmarks.<runner> ...`) so that no thread
pool, allocator or Ray connection of one system lingers while another is measured. It
prints one JSON object on its last stdout line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from benchmarks.harness.configs import CONFIGS, TINY, BenchConfig, warmup_steps


@dataclass
class ChildResult:
    """Raw per-step wall times of one run; the orchestrator turns them into figures."""

    system: str
    config: str
    step_s: list[float]
    threads: int
    blas: list[dict] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)  # per process
    setup_s: float = 0.0
    cpu_per_step_s: float = float("nan")  # CPU time of all threads per step, after warm-up


def parse_args(description: str, systems: tuple[str, ...]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("system", choices=systems)
    parser.add_argument("--config", required=True, choices=[*CONFIGS, TINY.name])
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--data", required=True, help="prepared CIFAR-10 Arrow dataset")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    return parser.parse_args()


def config_named(name: str) -> BenchConfig:
    return TINY if name == TINY.name else CONFIGS[name]


def train_arrays(
    data: str, config: BenchConfig, worker: int = 0, workers: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Worker `worker` of `workers`'s rows of the train split as float32 (mean-subtracted)
    images and int64 labels: the arrays distnet's workers read, held in memory, as rows
    of 3072 for a fully connected config and (N, 3, 32, 32) for a conv net."""
    from distnet.data.reader import open_split

    split = open_split(
        data, "train", worker, workers, verify=False, layout="nchw" if config.is_conv else "flat"
    )
    return split.batch(np.arange(split.num_rows))


def worker_batch(batch: int, worker: int, workers: int) -> int:
    """Rows of a global batch that `worker` computes (as distnet's TrainConfig splits it)."""
    return batch // workers + (worker < batch % workers)


def timed_steps(step, steps: int) -> tuple[list[float], float]:
    """Wall time of each call step(i) for i in range(steps), and the process's CPU time
    (all threads) per step after warm-up: a cost that other load on the machine barely
    changes, unlike the wall time."""
    times, cpu_start = [], 0.0
    warmup = warmup_steps(steps)
    for i in range(steps):
        if i == warmup:
            cpu_start = time.process_time()
        start = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - start)
    return times, (time.process_time() - cpu_start) / max(steps - warmup, 1)


def peak_rss_mb(pid: int | str = "self") -> float:
    """The process's peak resident set size (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def emit(result: ChildResult) -> None:
    sys.stdout.write(json.dumps(asdict(result)) + "\n")
    sys.stdout.flush()
