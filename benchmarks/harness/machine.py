"""What the benchmarks ran on, and the BLAS environment they run with.

On some processors OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are set on this workplace's
machines (older OpenBLAS builds crash without them); they make a current numpy pick a
slower kernel. The benchmark unsets both together, for its own processes only (Ray's
workers and the PyTorch children inherit the cleaned environment), and reports which
kernel then runs.
"""

from __future__ import annotations

import os
import platform
import sys
import time

BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def clean_blas_env() -> dict[str, str]:
    """Re-execute this process without the BLAS overrides if any is set (they are read
    once, when OpenBLAS loads). Returns the overrides that the original process had."""
    removed = {k: os.environ[k] for k in BLAS_OVERRIDES if k in os.environ}
    if removed:
        env = {k: v for k, v in os.environ.items() if k not in BLAS_OVERRIDES}
        env["DISTNET_BENCH_REMOVED"] = ";".join(f"{k}={v}" for k, v in removed.items())
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    note = os.environ.get("DISTNET_BENCH_REMOVED", "")
    return dict(item.split("=", 1) for item in note.split(";") if item)


def blas_info() -> list[dict]:
    """threadpoolctl's view of this process's BLAS/OpenMP pools (empty if not installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [
        {
            k: p.get(k)
            for k in (
                "user_api",
                "internal_api",
                "version",
                "architecture",
                "num_threads",
                "threading_layer",
                "prefix",
            )
        }
        for p in threadpool_info()
    ]


def process_threads(pid: int) -> dict:
    """Thread count and thread-related environment of another process (from /proc)."""
    info: dict = {"pid": pid}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    info["threads"] = int(line.split()[1])
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        for name in THREAD_VARS + BLAS_OVERRIDES:
            if name.encode() in env:
                info[name] = env[name.encode()].decode()
    except OSError:
        pass
    return info


def idle_fraction(seconds: float = 1.0) -> float:
    """Fraction of the machine's CPU time that was idle over the next `seconds`."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
        return ticks[3] + ticks[4], sum(ticks)  # idle + iowait, total

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(total1 - total0, 1)


def wait_until_quiet(min_idle: float, max_wait_s: float) -> float:
    """Wait (at most max_wait_s) until the machine is at least `min_idle` idle, so a
    measurement starts when the other work on a shared machine pauses. Returns the idle
    fraction measured last."""
    deadline = time.monotonic() + max_wait_s
    idle = idle_fraction()
    while idle < min_idle and time.monotonic() < deadline:
        idle = idle_fraction()
    return idle


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return sorted(f for f in flags if f.startswith(("avx", "fma")))
    except OSError:
        pass
    return []


def describe(removed: dict[str, str]) -> dict:
    """The machine and software versions, for the results' header."""
    import numpy as np

    desc = {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_blas": blas_info(),
        "blas_overrides_removed": removed,
        "load_avg_start": os.getloadavg(),
    }
    for module in ("ray", "torch", "pyarrow"):
        try:
            desc[module] = __import__(module).__version__
        except ImportError:
            desc[module] = None
    return desc
