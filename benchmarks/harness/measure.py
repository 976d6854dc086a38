"""One measurement = one system training one config for a fixed number of steps; and
the statistics that turn repeated measurements into the figures of the report.

Systems:
  numpy     distnet's single-process Solver step (benchmarks/solver_step.py)
  torch     the same net in PyTorch, one process, as many threads as numpy's BLAS has
  distnet1  `distnet.train` with 1 gradient worker (+ 1 parameter server)
  distnet2  `distnet.train` with 2 gradient workers
  ddp       PyTorch DistributedDataParallel, gloo, 2 processes of 1 thread, 127.0.0.1
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.harness.configs import BenchConfig, warmup_steps
from benchmarks.harness.machine import wait_until_quiet

SYSTEMS = ("numpy", "torch", "distnet1", "distnet2", "ddp")
CHILD_MODULES = {
    "numpy": "benchmarks.solver_step",
    "torch": "benchmarks.torch_nets",
    "ddp": "benchmarks.torch_nets",
}
REPO = Path(__file__).resolve().parents[2]
CHILD_TIMEOUT_S = 900


@dataclass
class Measurement:
    system: str
    config: str
    batch_size: int
    repeat: int
    step_s: list[float]
    load_avg: float  # 1-minute load average when the measurement started
    idle_before: float  # fraction of the machine idle in the second before it started
    details: dict = field(default_factory=dict)  # system-specific: split, memory, threads
    error: str | None = None

    @property
    def timed(self) -> list[float]:
        """Step times after warm-up."""
        return self.step_s[warmup_steps(len(self.step_s) + 1) :]

    @property
    def median_step_s(self) -> float:
        return statistics.median(self.timed) if self.timed else float("nan")

    @property
    def samples_per_s(self) -> float:
        """Steady-state throughput: the global batch over the median step time."""
        return self.batch_size / self.median_step_s

    @property
    def fast_step_s(self) -> float:
        """10th percentile of the step times: the steps least disturbed by other load."""
        ordered = sorted(self.timed)
        return ordered[len(ordered) // 10] if ordered else float("nan")

    @property
    def fast_samples_per_s(self) -> float:
        return self.batch_size / self.fast_step_s

    @property
    def mean_samples_per_s(self) -> float:
        """Throughput over the whole timed window (counts the occasional slow step)."""
        return self.batch_size * len(self.timed) / sum(self.timed) if self.timed else float("nan")

    def to_json(self) -> dict:
        raw = asdict(self)
        raw["step_s"] = [round(t, 6) for t in self.step_s]
        return raw


def measure(
    system: str,
    config: BenchConfig,
    steps: int,
    data: str,
    threads: int,
    repeat: int,
    quiet: tuple[float, float] = (0.0, 0.0),
) -> Measurement:
    """Run one measurement; `quiet` = (min idle fraction, max wait s) to wait for first."""
    idle = wait_until_quiet(*quiet)
    load = os.getloadavg()[0]
    try:
        if system.startswith("distnet"):
            step_s, details = _in_process(system, config, steps, data)
        else:
            step_s, details = _child(system, config, steps, data, threads)
    # One failing system must not lose the others' figures: record the error, go on.
    except Exception as err:  # noqa: BLE001
        message = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err) else ''}"
        return Measurement(
            system, config.name, config.batch_size, repeat, [], load, idle, error=message
        )
    return Measurement(system, config.name, config.batch_size, repeat, step_s, load, idle, details)


def _in_process(system: str, config: BenchConfig, steps: int, data: str):
    from benchmarks.harness import dist_run

    result = dist_run.run(config, int(system.removeprefix("distnet")), steps, data)
    details = asdict(result)
    return details.pop("step_s"), details


def _child(system: str, config: BenchConfig, steps: int, data: str, threads: int):
    command = [
        sys.executable,
        "-m",
        CHILD_MODULES[system],
        system,
        "--config",
        config.name,
        "--steps",
        str(steps),
        "--data",
        data,
        "--threads",
        str(threads),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    }
    done = subprocess.run(
        command,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=CHILD_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:4])} failed: {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result.pop("step_s"), result


@dataclass
class Summary:
    """The repeats of one (config, system), reduced to medians and their spread."""

    config: str
    system: str
    samples_per_s: float  # median over repeats of each repeat's steady-state throughput
    spread: float  # (max - min) / median over repeats: the noise between repeats
    step_ms: float
    fast_samples_per_s: float  # from the 10th-percentile step time, median over repeats
    fast_spread: float
    mean_samples_per_s: float
    repeats: int
    errors: list[str]


def summarize(measurements: list[Measurement]) -> dict[tuple[str, str], Summary]:
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.config, m.system), []).append(m)
    out = {}
    for (config, system), group in groups.items():
        good = [m for m in group if m.error is None and m.timed]
        rate, spread = _median_spread([m.samples_per_s for m in good])
        fast, fast_spread = _median_spread([m.fast_samples_per_s for m in good])
        out[config, system] = Summary(
            config,
            system,
            rate,
            spread,
            _median_spread([1e3 * m.median_step_s for m in good])[0],
            fast,
            fast_spread,
            _median_spread([m.mean_samples_per_s for m in good])[0],
            len(good),
            [m.error for m in group if m.error],
        )
    return out


def _median_spread(values: list[float]) -> tuple[float, float]:
    """Median, and (max - min) / median (nan for fewer than two values)."""
    if not values:
        return float("nan"), float("nan")
    median = statistics.median(values)
    return median, (max(values) - min(values)) / median if len(values) > 1 else float("nan")


def median_detail(
    measurements: list[Measurement], config: str, system: str, key: str, sub: str | None = None
) -> float:
    """Median over repeats of details[key] (or details[key][sub]; lists: their max)."""
    values = []
    for m in measurements:
        if m.config != config or m.system != system or m.error:
            continue
        value = m.details.get(key)
        if sub is not None:
            value = value.get(sub) if isinstance(value, dict) else None
        if isinstance(value, list):
            value = max(value) if value else None
        if value is not None:
            values.append(value)
    return statistics.median(values) if values else float("nan")
