"""Markdown tables of a benchmark run, printed and written into benchmarks/README.md
(between the results markers; the hand-written text around them is kept)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from benchmarks.harness.configs import CONFIGS, TINY, BenchConfig
from benchmarks.harness.measure import Measurement, Summary, median_detail

LABELS = {
    "numpy": "distnet Solver (1 proc)",
    "torch": "PyTorch (1 proc)",
    "distnet1": "distnet train 1w",
    "distnet2": "distnet train 2w",
    "ddp": "PyTorch DDP 2p",
}


def _num(value: float, digits: int = 0) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _ratio(a: float, b: float) -> str:
    return "—" if math.isnan(a) or math.isnan(b) or not b else f"{a / b:.2f}"


def _rate(s: Summary | None, fast: bool) -> str:
    if s is None or s.repeats == 0:
        return "failed" if s and s.errors else "—"
    rate, spread = (s.fast_samples_per_s, s.fast_spread) if fast else (s.samples_per_s, s.spread)
    noise = "" if math.isnan(spread) else f" ±{50 * spread:.0f}%"
    return f"{rate:,.0f}{noise}"


def bytes_per_step(config: BenchConfig, workers: int) -> int:
    """float32 bytes that cross between processes per synchronous step: each worker reads
    the parameters (and batchnorm state) once and sends back a gradient (and its stats)."""
    return 4 * (config.param_count() + config.bn_count()) * workers * 2


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _header(*names) -> list[str]:
    return [_row(*names), "|" + "---|" * len(names)]


class _Figures:
    """Lookups into one run's summaries and measurements, by (config, system)."""

    def __init__(self, measurements: list[Measurement], summary: dict):
        self.measurements, self.summary = measurements, summary

    def get(self, name: str, system: str) -> Summary | None:
        s = self.summary.get((name, system))
        return s if s is not None and s.repeats else None

    def rate(self, name: str, system: str, fast: bool = False) -> float:
        s = self.get(name, system)
        if s is None:
            return float("nan")
        return s.fast_samples_per_s if fast else s.samples_per_s

    def detail(self, name: str, system: str, key: str, sub: str | None = None) -> float:
        return median_detail(self.measurements, name, system, key, sub)


def throughput_table(f: _Figures, configs: list[str], fast: bool = False) -> list[str]:
    """Samples/s per config and system; `fast`: from the 10th-percentile step time."""
    rows = _header(
        "config",
        "global batch",
        *LABELS.values(),
        "Solver / PyTorch",
        "distnet 2w / DDP",
        "scaling 1w→2w",
        "PyTorch scaling 1p→DDP 2p",
    )
    for name in configs:
        eff = f.rate(name, "distnet2", fast) / (2 * f.rate(name, "distnet1", fast))
        # The same measure for PyTorch: DDP's 2 processes against one process (meaningful
        # with --threads 1, where both use one thread per process).
        torch_eff = f.rate(name, "ddp", fast) / (2 * f.rate(name, "torch", fast))
        rows.append(
            _row(
                name,
                CONFIGS[name].batch_size,
                *(_rate(f.summary.get((name, s)), fast) for s in LABELS),
                _ratio(f.rate(name, "numpy", fast), f.rate(name, "torch", fast)),
                _ratio(f.rate(name, "distnet2", fast), f.rate(name, "ddp", fast)),
                _percent(eff),
                _percent(torch_eff),
            )
        )
    return rows


def _percent(value: float) -> str:
    return "—" if math.isnan(value) else f"{100 * value:.0f}%"


def split_table(f: _Figures, configs: list[str]) -> list[str]:
    rows = _header(
        "config",
        "workers",
        "step ms",
        "compute max ms",
        "compute mean ms",
        "server update ms",
        "wait ms (transfer, scheduling, driver)",
        "MB moved / step",
        "MB/s",
        "worker peak RSS MB",
        "server peak RSS MB",
    )
    for name in configs:
        c = TINY if name == TINY.name else CONFIGS[name]
        for workers in (1, 2):
            system = f"distnet{workers}"
            s = f.get(name, system)
            if s is None:
                continue
            split = [
                _num(f.detail(name, system, "split_ms", tag), 2)
                for tag in (
                    "step_s",
                    "compute_max_s",
                    "compute_mean_s",
                    "server_update_s",
                    "wait_s",
                )
            ]
            mb = bytes_per_step(c, workers) / 1e6
            rows.append(
                _row(
                    name,
                    workers,
                    *split,
                    f"{mb:.2f}",
                    _num(mb * 1e3 / s.step_ms),
                    _num(f.detail(name, system, "worker_rss_mb")),
                    _num(f.detail(name, system, "server_rss_mb")),
                )
            )
    return rows


def overhead_lines(f: _Figures) -> list[str]:
    name = TINY.name
    lines = [
        (
            f"Tiny network (hidden {list(TINY.hidden_dims)}, global batch {TINY.batch_size}):"
            " compute is negligible, so the step time is the framework's own cost."
        ),
        "",
        *_header(
            "system",
            "step ms (median)",
            "compute max ms",
            "server update ms",
            "overhead ms = step − compute − update",
        ),
    ]
    for system in ("distnet2", "distnet1", "ddp"):
        s = f.get(name, system)
        if s is None:
            continue
        compute = f.detail(name, system, "split_ms", "compute_max_s")
        update = f.detail(name, system, "split_ms", "server_update_s")
        lines.append(
            _row(
                LABELS[system],
                f"{s.step_ms:.2f}",
                _num(compute, 2),
                _num(update, 2),
                _num(s.step_ms - compute - update, 2),
            )
        )
    return lines


def cpu_lines(f: _Figures, configs: list[str]) -> list[str]:
    """CPU time per sample: what a step costs the machine, whatever else runs on it."""
    lines = _header(
        "config",
        *LABELS.values(),
        "distnet 2w: driver / workers / server / Ray daemons, ms per step",
    )
    for name in [*configs, TINY.name]:
        batch = (TINY if name == TINY.name else CONFIGS[name]).batch_size
        cells = [_num(1e6 * f.detail(name, s, "cpu_per_step_s") / batch, 1) for s in LABELS]
        roles = " / ".join(
            _num(f.detail(name, "distnet2", "cpu_split_ms", role), 1)
            for role in ("driver", "workers", "servers", "ray")
        )
        lines.append(_row(name, *cells, roles))
    return lines


def memory_lines(f: _Figures, configs: list[str]) -> list[str]:
    lines = _header(
        "config",
        "distnet Solver",
        "PyTorch (1 proc)",
        "PyTorch DDP per process",
        "distnet worker",
        "distnet server",
    )
    for name in configs:
        lines.append(
            _row(
                name,
                *(_num(f.detail(name, s, "peak_rss_mb")) for s in ("numpy", "torch", "ddp")),
                _num(f.detail(name, "distnet2", "worker_rss_mb")),
                _num(f.detail(name, "distnet2", "server_rss_mb")),
            )
        )
    return lines


def threads_lines(measurements: list[Measurement], probe: dict) -> list[str]:
    """Which BLAS kernel and how many threads each system used, as measured."""
    seen: dict[str, str] = {}
    for m in measurements:
        if m.error or m.system in seen or m.system.startswith("distnet"):
            continue
        pools = ", ".join(
            f"{p.get('internal_api') or p.get('user_api')} "
            f"{p.get('architecture') or p.get('version') or ''} "
            f"× {p.get('num_threads')}".replace("  ", " ")
            for p in m.details.get("blas", [])
        )
        seen[m.system] = pools
    lines = [f"- {LABELS[s]}: {pools}" for s, pools in seen.items()]
    for role, info in probe.items():
        pools = ", ".join(
            f"{p['internal_api']} {p['architecture']} × {p['num_threads']}" for p in info["blas"]
        )
        lines.append(f"- distnet {role}: {pools} (env {info['env']})")
    return lines


def machine_lines(machine: dict) -> list[str]:
    blas = ", ".join(
        f"{p['internal_api']} {p['version']} ({p['architecture']}, {p['num_threads']} threads)"
        for p in machine["numpy_blas"]
    )
    removed = machine["blas_overrides_removed"]
    return [
        (
            f"- CPU: {machine['cpu']}, {machine['nproc']} logical CPUs "
            f"({' '.join(machine['cpu_flags'])}), {machine['memory_gib']} GiB"
        ),
        (
            f"- Linux {machine['kernel']}, Python {machine['python']}, numpy {machine['numpy']}"
            f" with {blas}, Ray {machine['ray']}, PyTorch {machine['torch']}, "
            f"pyarrow {machine['pyarrow']}"
        ),
        "- BLAS overrides: "
        + (
            ", ".join(f"{k}={v}" for k, v in removed.items())
            + " were set and were unset for this run"
            if removed
            else "OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE were not set"
        ),
    ]


def render(run: dict, measurements: list[Measurement], summary: dict) -> str:
    configs = [c for c in run["configs"] if c in CONFIGS]
    f = _Figures(measurements, summary)
    loads = [m.load_avg for m in measurements]
    idle = sorted(m.idle_before for m in measurements)
    label = f" — {run['label']}" if run.get("label") else ""
    out = [
        (
            f"Run of {run['date']}{label}: `{run['command']}` ({run['repeats']} repeats, "
            f"{run['wall_min']:.0f} min)"
        ),
        "",
        *machine_lines(run["machine"]),
        (
            f"- Machine load (1-min load average) during the run: {min(loads):.1f} to "
            f"{max(loads):.1f} on {run['machine']['nproc']} CPUs (shared with other work); "
            f"idle fraction in the second before a measurement: median "
            f"{idle[len(idle) // 2]:.0%}, lowest {idle[0]:.0%}"
        ),
        "",
        "### Steady-state throughput, samples/s: global batch / median step time",
        "",
        "Median over repeats, ± half the spread between repeats.",
        "",
        *throughput_table(f, configs),
        "",
        "### Least-disturbed throughput, samples/s: global batch / 10th-percentile step time",
        "",
        (
            "The machine is shared: the fastest tenth of the steps estimates what each system"
            " does when the other work leaves it the CPUs."
        ),
        "",
        *throughput_table(f, configs, fast=True),
        "",
        "### distnet step time split (medians of the TensorBoard time/* scalars)",
        "",
        *split_table(f, [*configs, TINY.name]),
        "",
    ]
    if any(key[0] == TINY.name for key in summary):
        out += ["### Framework overhead per synchronous step", "", *overhead_lines(f), ""]
    out += [
        "### CPU time per sample, µs (all threads of all the system's processes)",
        "",
        (
            "Summed user + system time over the timed steps, divided by the samples: the"
            " cost of a step in CPU, which other load on the machine changes far less than"
            " the wall time. A thread that spins while it waits (OpenMP, OpenBLAS) counts."
        ),
        "",
        *cpu_lines(f, configs),
        "",
        "### Peak resident memory per process, MB (VmHWM)",
        "",
        *memory_lines(f, configs),
        "",
        "### Threads and BLAS kernels, as measured in each process",
        "",
        *threads_lines(measurements, run["actor_threads"]),
    ]
    errors = sorted({f"{m.config}/{m.system}: {m.error}" for m in measurements if m.error})
    if errors:
        out += ["", "### Failures", "", *[f"- {e}" for e in errors]]
    return "\n".join(out) + "\n"


def markers(section: str = "results") -> tuple[str, str]:
    """The README comments around a section of generated tables."""
    return f"<!-- {section}:start -->", f"<!-- {section}:end -->"


START, END = markers()


def write_readme(path: Path, body: str, section: str = "results") -> None:
    """Replace the text between the section's markers (atomically); a section not there
    yet is added at the end."""
    start, end = markers(section)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start not in text:
        text = f"{text.rstrip()}\n\n{start}\n{end}\n"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    new = f"{head}{start}\n{body}{end}{tail}"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
