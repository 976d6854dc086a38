"""Markdown tables of a benchmark run, printed and written into benchmarks/README.md
(between the results markers; the hand-written text around them is kept)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from benchmarks.configs import CONFIGS, TINY, BenchConfig
from benchmarks.measure import Measurement, Summary, median_detail

START, END = "<!-- results:start -->", "<!-- results:end -->"
LABELS = {"numpy": "distnet Solver (1 proc)", "torch": "PyTorch (1 proc)",
          "distnet1": "distnet train 1w", "distnet2": "distnet train 2w",
          "ddp": "PyTorch DDP 2p"}


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


def throughput_table(summary: dict, configs: list[str], fast: bool = False) -> list[str]:
    """Samples/s per config and system; `fast`: from the 10th-percentile step time."""
    rows = ["| config | global batch | " + " | ".join(LABELS.values())
            + " | Solver / PyTorch | distnet 2w / DDP | scaling 1w→2w |",
            "|" + "---|" * (len(LABELS) + 5)]
    for name in configs:
        c = CONFIGS[name]
        get = lambda system: summary.get((name, system))  # noqa: E731
        rate = lambda system: (  # noqa: E731
            float("nan") if not get(system)
            else get(system).fast_samples_per_s if fast else get(system).samples_per_s)
        eff = rate("distnet2") / (2 * rate("distnet1"))
        rows.append(f"| {name} | {c.batch_size} | "
                    + " | ".join(_rate(get(s), fast) for s in LABELS)
                    + f" | {_ratio(rate('numpy'), rate('torch'))}"
                    f" | {_ratio(rate('distnet2'), rate('ddp'))}"
                    f" | {'—' if math.isnan(eff) else f'{100 * eff:.0f}%'} |")
    return rows


def split_table(measurements: list[Measurement], summary: dict,
                configs: list[str]) -> list[str]:
    rows = ["| config | workers | step ms | compute max ms | compute mean ms | server update ms"
            " | wait ms (transfer, scheduling, driver) | MB moved / step | MB/s"
            " | worker peak RSS MB | server peak RSS MB |",
            "|" + "---|" * 11]
    for name in configs:
        c = TINY if name == TINY.name else CONFIGS[name]
        for workers in (1, 2):
            system = f"distnet{workers}"
            s = summary.get((name, system))
            if s is None or not s.repeats:
                continue
            split = lambda tag: median_detail(measurements, name, system, "split_ms", tag)  # noqa: E731
            mb = bytes_per_step(c, workers) / 1e6
            rows.append(
                f"| {name} | {workers} | {_num(split('step_s'), 2)} | "
                f"{_num(split('compute_max_s'), 2)} | {_num(split('compute_mean_s'), 2)} | "
                f"{_num(split('server_update_s'), 2)} | {_num(split('wait_s'), 2)} | "
                f"{mb:.2f} | {_num(mb * 1e3 / s.step_ms)} | "
                f"{_num(median_detail(measurements, name, system, 'worker_rss_mb'))} | "
                f"{_num(median_detail(measurements, name, system, 'server_rss_mb'))} |")
    return rows


def overhead_lines(measurements: list[Measurement], summary: dict) -> list[str]:
    name = TINY.name
    lines = [f"Tiny network (hidden {list(TINY.hidden_dims)}, global batch {TINY.batch_size}):"
             " compute is negligible, so the step time is the framework's own cost.", "",
             "| system | step ms (median) | compute max ms | server update ms"
             " | overhead ms = step − compute − update |", "|---|---|---|---|---|"]
    for system in ("distnet2", "distnet1", "ddp"):
        s = summary.get((name, system))
        if s is None or not s.repeats:
            continue
        split = lambda tag: median_detail(measurements, name, system, "split_ms", tag)  # noqa: E731
        compute, update = split("compute_max_s"), split("server_update_s")
        overhead = s.step_ms - compute - update
        lines.append(f"| {LABELS[system]} | {s.step_ms:.2f} | {_num(compute, 2)} | "
                     f"{_num(update, 2)} | {_num(overhead, 2)} |")
    return lines


def memory_lines(measurements: list[Measurement], configs: list[str]) -> list[str]:
    lines = ["| config | distnet Solver | PyTorch (1 proc) | PyTorch DDP per process"
             " | distnet worker | distnet server |", "|---|---|---|---|---|---|"]
    for name in configs:
        peak = lambda system, key="peak_rss_mb": median_detail(measurements, name, system, key)  # noqa: E731
        lines.append(f"| {name} | {_num(peak('numpy'))} | {_num(peak('torch'))} | "
                     f"{_num(peak('ddp'))} | {_num(peak('distnet2', 'worker_rss_mb'))} | "
                     f"{_num(peak('distnet2', 'server_rss_mb'))} |")
    return lines


def threads_lines(measurements: list[Measurement], probe: dict) -> list[str]:
    """Which BLAS kernel and how many threads each system used, as measured."""
    seen: dict[str, str] = {}
    for m in measurements:
        if m.error or m.system in seen or m.system.startswith("distnet"):
            continue
        pools = ", ".join(f"{p.get('internal_api') or p.get('user_api')} "
                          f"{p.get('architecture') or p.get('version') or ''} "
                          f"× {p.get('num_threads')}".replace("  ", " ")
                          for p in m.details.get("blas", []))
        seen[m.system] = pools
    lines = [f"- {LABELS[s]}: {pools}" for s, pools in seen.items()]
    for role, info in probe.items():
        pools = ", ".join(f"{p['internal_api']} {p['architecture']} × {p['num_threads']}"
                          for p in info["blas"])
        lines.append(f"- distnet {role}: {pools} (env {info['env']})")
    return lines


def machine_lines(machine: dict) -> list[str]:
    blas = ", ".join(f"{p['internal_api']} {p['version']} ({p['architecture']}, "
                     f"{p['num_threads']} threads)" for p in machine["numpy_blas"])
    removed = machine["blas_overrides_removed"]
    return [
        f"- CPU: {machine['cpu']}, {machine['nproc']} logical CPUs "
        f"({' '.join(machine['cpu_flags'])}), {machine['memory_gib']} GiB",
        f"- Linux {machine['kernel']}, Python {machine['python']}, numpy {machine['numpy']}"
        f" with {blas}, Ray {machine['ray']}, PyTorch {machine['torch']}, "
        f"pyarrow {machine['pyarrow']}",
        "- BLAS overrides: " + (", ".join(f"{k}={v}" for k, v in removed.items())
                                + " were set and were unset for this run" if removed
                                else "OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE were not set"),
    ]


def render(run: dict, measurements: list[Measurement], summary: dict) -> str:
    configs = [c for c in run["configs"] if c in CONFIGS]
    loads = [m.load_avg for m in measurements]
    idle = sorted(m.idle_before for m in measurements)
    label = f" — {run['label']}" if run.get("label") else ""
    out = [f"Run of {run['date']}{label}: `{run['command']}` ({run['repeats']} repeats, "
           f"{run['wall_min']:.0f} min)", "", *machine_lines(run["machine"]),
           f"- Machine load (1-min load average) during the run: {min(loads):.1f} to "
           f"{max(loads):.1f} on {run['machine']['nproc']} CPUs (shared with other work); "
           f"idle fraction in the second before a measurement: median "
           f"{idle[len(idle) // 2]:.0%}, lowest {idle[0]:.0%}", "",
           "### Steady-state throughput, samples/s: global batch / median step time",
           "",
           "Median over repeats, ± half the spread between repeats.", "",
           *throughput_table(summary, configs), "",
           "### Least-disturbed throughput, samples/s: global batch / 10th-percentile step time",
           "",
           "The machine is shared: the fastest tenth of the steps estimates what each system"
           " does when the other work leaves it the CPUs.", "",
           *throughput_table(summary, configs, fast=True), "",
           "### distnet step time split (medians of the TensorBoard time/* scalars)", "",
           *split_table(measurements, summary, configs + [TINY.name]), ""]
    if any(key[0] == TINY.name for key in summary):
        out += ["### Framework overhead per synchronous step", "",
                *overhead_lines(measurements, summary), ""]
    out += ["### Peak resident memory per process, MB (VmHWM)", "",
            *memory_lines(measurements, configs), "",
            "### Threads and BLAS kernels, as measured in each process", "",
            *threads_lines(measurements, run["actor_threads"])]
    errors = sorted({f"{m.config}/{m.system}: {m.error}" for m in measurements if m.error})
    if errors:
        out += ["", "### Failures", "", *[f"- {e}" for e in errors]]
    return "\n".join(out) + "\n"


def write_readme(path: Path, body: str) -> None:
    """Replace the text between the results markers (atomically)."""
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    new = f"{head}{START}\n{body}{END}{tail}"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
