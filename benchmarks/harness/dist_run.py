"""Time `distnet.train` in this process, on a Ray instance that stays up between runs
(starting Ray takes tens of seconds on a busy 2-core machine; no run pays for it).

A step's time is the interval between consecutive `on_step` callbacks: the driver keeps
one step in flight, so that interval is the steady-state cost of a step. The time split
comes back from the run's own TensorBoard scalars (time/compute_max_s, ...), the memory
from /proc of the worker and server processes at the last step.
"""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from itertools import pairwise

from benchmarks.harness.child import peak_rss_mb
from benchmarks.harness.configs import BenchConfig, warmup_steps
from benchmarks.harness.machine import blas_info, process_threads

SPLIT_TAGS = ("step_s", "compute_max_s", "compute_mean_s", "server_update_s", "wait_s")
# train.steps_per_call of every run (benchmarks.throughput --steps-per-call). The steps of
# one call are booked together, so a step's time is then its call's interval / the steps.
STEPS_PER_CALL = 1


@dataclass
class DistResult:
    system: str  # "distnet1" / "distnet2": the worker count
    config: str
    step_s: list[float]
    split_ms: dict[str, float] = field(default_factory=dict)  # medians after warm-up
    worker_rss_mb: list[float] = field(default_factory=list)  # peak (VmHWM) per worker
    server_rss_mb: list[float] = field(default_factory=list)
    worker_procs: list[dict] = field(default_factory=list)  # threads and thread env vars
    setup_s: float = 0.0
    cpu_per_step_s: float = float("nan")  # all processes (driver, actors, Ray's daemons)
    cpu_split_ms: dict[str, float] = field(default_factory=dict)  # per step, by role


def start_ray(num_cpus: int) -> None:
    from distnet.distributed.runtime import init_local_ray

    init_local_ray(num_cpus=num_cpus, log_to_driver=False)


def probe_actor_threads() -> dict[str, list[dict]]:
    """BLAS pools seen inside Ray actors sized like distnet's workers (1 CPU) and
    parameter servers (0 CPU): what OMP_NUM_THREADS=1 per actor actually changes."""
    import os

    import ray

    class Probe:
        def info(self):
            import numpy  # noqa: F401  (loads OpenBLAS, as GradientWorker's import does)

            env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
            return {"env": env, "blas": blas_info()}

    found = {}
    for name, cpus in (("worker (num_cpus=1)", 1), ("server (num_cpus=0)", 0)):
        actor = ray.remote(num_cpus=cpus)(Probe).remote()
        found[name] = ray.get(actor.info.remote())
        ray.kill(actor)
    return found


def run(
    config: BenchConfig, workers: int, steps: int, data: str, update: str = "sync"
) -> DistResult:
    import distnet
    from distnet.config import JobConfig

    marks: list[float] = []
    pids: dict[str, list[int]] = {}
    memory: dict[str, list[float]] = {}

    cpu: list[dict[int, float]] = []
    warmup = warmup_steps(steps)

    def on_step(event) -> None:
        marks.append(time.perf_counter())
        if event.step == 0:  # still warming up: a round trip here costs nothing timed
            pids["workers"] = event.group.worker_pids()
            pids["servers"] = event.group.server_pids()
        if event.step in (warmup, steps - 1):
            cpu.append(_cpu_times())
        if event.step == steps - 1:
            memory["workers"] = [peak_rss_mb(p) for p in pids["workers"]]
            memory["servers"] = [peak_rss_mb(p) for p in pids["servers"]]
            memory["procs"] = [process_threads(p) for p in pids["workers"]]

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="distnet-bench-") as tmp:
        raw = config.job_dict(workers=workers, data=data, tmp=tmp, max_steps=steps, update=update)
        raw["train"]["steps_per_call"] = STEPS_PER_CALL
        job = JobConfig.from_dict(raw)
        distnet.train(job, progress=False, overwrite=True, on_step=on_step)
        split = _time_split(f"{tmp}/runs", warmup_steps(steps))
    _wait_gone(pids.get("workers", []) + pids.get("servers", []))
    if len(marks) != steps:
        raise RuntimeError(
            f"the run stopped after {len(marks)} of {steps} steps (an epoch has fewer steps?)"
        )
    per_step = {}
    if len(cpu) == 2:
        used = {pid: t - cpu[0].get(pid, 0.0) for pid, t in cpu[1].items()}
        roles = {
            os.getpid(): "driver",
            **{p: "workers" for p in pids["workers"]},
            **{p: "servers" for p in pids["servers"]},
        }
        for pid, seconds in used.items():
            role = roles.get(pid, "ray")
            per_step[role] = per_step.get(role, 0.0) + 1e3 * seconds / (steps - 1 - warmup)
    return DistResult(
        system=f"distnet{workers}",
        config=config.name,
        step_s=_step_times(marks, STEPS_PER_CALL),
        split_ms=split,
        worker_rss_mb=memory.get("workers", []),
        server_rss_mb=memory.get("servers", []),
        worker_procs=memory.get("procs", []),
        setup_s=time.perf_counter() - start - (marks[-1] - marks[0]),
        cpu_per_step_s=sum(per_step.values()) / 1e3 if per_step else float("nan"),
        cpu_split_ms=per_step,
    )


def _step_times(marks: list[float], per_call: int) -> list[float]:
    """Seconds per step from the times steps were booked: with several steps per call
    (booked together, the calls starting at step 0: a benchmark run has no boundary
    before its end) each step of a call gets the call's interval / per_call."""
    if per_call == 1:
        return [b - a for a, b in pairwise(marks)]
    ends = marks[per_call - 1 :: per_call]
    return [(b - a) / per_call for a, b in pairwise(ends) for _ in range(per_call)]


def _cpu_times() -> dict[int, float]:
    """CPU seconds used so far by this process and every process it started (Ray's
    daemons and actors, when this process started Ray)."""
    import psutil

    me = psutil.Process()
    found = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            found[proc.pid] = t.user + t.system
        except psutil.Error:  # exited meanwhile
            pass
    return found


def _time_split(logdir: str, warmup: int) -> dict[str, float]:
    """Median of each time/* scalar over the steps after warm-up, in ms."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import (
            EventAccumulator,
        )
    except ImportError:  # tensorboard comes with distnet's test extra, not with torch
        return {}
    events = EventAccumulator(logdir, size_guidance={"scalars": 0})
    events.Reload()
    split = {}
    for tag in SPLIT_TAGS:
        if f"time/{tag}" in events.Tags()["scalars"]:
            values = [e.value for e in events.Scalars(f"time/{tag}") if e.step >= warmup]
            if values:
                split[tag] = 1e3 * statistics.median(values)
    return split


def _wait_gone(pids: list[int], timeout_s: float = 20.0) -> None:
    """Let the finished run's actor processes exit before the next measurement starts."""
    import psutil

    gc.collect()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in pids):
        time.sleep(0.2)
