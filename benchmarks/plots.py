"""Draw benchmarks/README.md's tables as PNG plots from the raw results they come from.

    python -m benchmarks.plots          # needs matplotlib: pip install 'distnet-ray[plots]'

Reads results.jsonl (throughput.py), modes_results.jsonl (modes.py) and
conv_layers_results.jsonl (conv_layers.py) and writes into benchmarks/figures/:
throughput.png (samples/s per config and system, the spread of the repeats as error bars),
step_split.png (where a distnet step's time goes, 1 and 2 workers), modes.png (validation
accuracy over time per consistency model, each repeat a line) and conv_layers.png (each
layer's speed against PyTorch). Each plot is of the run its README table shows (by
default the newest run in the file; --throughput-run, --conv-run to choose).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEMS = {  # throughput.py's system keys, as the README's tables name them
    "numpy": "distnet Solver (1 proc)",
    "torch": "PyTorch (1 proc)",
    "distnet1": "distnet train 1w",
    "distnet2": "distnet train 2w",
    "ddp": "PyTorch DDP 2p",
}
MODES = {
    "sync": "sync (straggler)",
    "sync+backup": "sync + 1 backup worker",
    "async": "async",
    "ssp": "ssp, staleness 4",
    "sync-nodelay": "sync, no straggler (reference)",
}


def records(name: str) -> list[dict]:
    with open(HERE / name) as lines:
        return [json.loads(line) for line in lines if line.strip()]


def runs_of(rows: list[dict], run: str | None) -> tuple[str, list[dict]]:
    """The measurements of run `run` (a run record's date), the newest one by default."""
    dates = [r["date"] for r in rows if r["record"] == "run"]
    run = run or dates[-1]
    if run not in dates:
        raise SystemExit(f"plots: no run {run!r} (runs: {', '.join(dates)})")
    return run, [r for r in rows if r["record"] == "measurement" and r.get("run") == run]


def throughput(plt, run: str | None, out: Path) -> Path:
    """Samples/s = global batch / median step time, median over repeats (log scale)."""
    run, rows = runs_of(records("results.jsonl"), run)
    rates = defaultdict(list)  # (config, system) -> samples/s of each repeat
    for r in rows:
        if r["error"] is None and r["step_s"]:
            rates[r["config"], r["system"]].append(r["batch_size"] / statistics.median(r["step_s"]))
    configs = list(dict.fromkeys(c for c, _ in rates))
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=110)
    width = 0.8 / len(SYSTEMS)
    for k, (system, label) in enumerate(SYSTEMS.items()):
        xs, mid, low, high = [], [], [], []
        for i, config in enumerate(configs):
            if values := rates.get((config, system)):
                xs.append(i + (k - (len(SYSTEMS) - 1) / 2) * width)
                mid.append(statistics.median(values))
                low.append(mid[-1] - min(values))
                high.append(max(values) - mid[-1])
        ax.bar(xs, mid, width, yerr=[low, high], capsize=2, label=label)
    ax.set_xticks(range(len(configs)), configs)
    ax.set_yscale("log")
    ax.set_ylabel("samples/s (log scale)")
    ax.set_title(f"Throughput, run of {run}: median of repeats, bars from slowest to fastest")
    ax.legend(fontsize=8, ncol=3)
    return save(plt, fig, out / "throughput.png")


def step_split(plt, run: str | None, out: Path) -> Path:
    """distnet train's step: compute (slowest worker), server update and wait as shares of
    the step (medians of the repeats' TensorBoard medians), the step's ms above each bar."""
    run, rows = runs_of(records("results.jsonl"), run)
    parts = {"compute_max_s": "compute (slowest worker)", "server_update_s": "server update"}
    parts["wait_s"] = "wait (transfer, scheduling, driver)"
    split = defaultdict(lambda: defaultdict(list))  # (config, workers) -> part -> ms
    for r in rows:
        if r["system"] in ("distnet1", "distnet2") and r["error"] is None:
            for key in [*parts, "step_s"]:
                split[r["config"], r["system"][-1]][key].append(r["details"]["split_ms"][key])
    bars = sorted(split, key=lambda b: (list(dict.fromkeys(c for c, _ in split)).index(b[0]), b[1]))
    median = {b: {k: statistics.median(v) for k, v in split[b].items()} for b in bars}
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=110)
    xs = range(len(bars))
    bottom = [0.0] * len(bars)
    for key, label in parts.items():
        shares = [
            100 * median[b][key] / sum(median[b][k] for k in parts) for b in bars
        ]  # the parts add up to the step (wait is what is left of it)
        ax.bar(xs, shares, bottom=bottom, label=label)
        bottom = [low + h for low, h in zip(bottom, shares, strict=True)]
    for x, b in zip(xs, bars, strict=True):
        ax.text(x, 101, f"{median[b]['step_s']:.1f} ms", ha="center", fontsize=7)
    names = [c.replace("_b", "\nb") + f"\n{w}w" for c, w in bars]
    ax.set_xticks(xs, names, fontsize=7)
    ax.set_ylim(0, 112)
    ax.set_ylabel("% of the step")
    ax.set_title(f"distnet step time split (TensorBoard time/*), medians, run of {run}")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
    return save(plt, fig, out / "step_split.png")


def modes(plt, out: Path) -> Path:
    """Validation accuracy over wall time per consistency model, with the 45% target."""
    rows = records("modes_results.jsonl")
    target = next(r["args"]["target"] for r in rows if r["record"] == "run")
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    colours = dict(zip(MODES, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    shown = set()
    for r in rows:
        if r["record"] != "measurement":
            continue
        seconds, _, acc = zip(*r["curve"], strict=True)
        label = None if r["mode"] in shown else MODES.get(r["mode"], r["mode"])
        shown.add(r["mode"])
        ax.plot(seconds, acc, color=colours.get(r["mode"]), lw=1.2, alpha=0.8, label=label)
    ax.axhline(target, color="black", lw=0.8, ls="--", label=f"target {target:.0%}")
    ax.set_xlabel("seconds")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Consistency models with a straggler (two_layer, 2 workers), each repeat a line")
    ax.legend(fontsize=8)
    return save(plt, fig, out / "modes.png")


def conv_layers(plt, run: str | None, out: Path) -> Path:
    """Each layer's speed vs PyTorch: PyTorch's fwd + bwd time over distnet's, per repeat,
    median (wall and CPU time); >= 1 means distnet is faster."""
    rows = records("conv_layers_results.jsonl")
    run, rows = runs_of(rows, run or "2026-12-03 12:22")  # the README's tables' run
    times = {(r["layer"], r["system"], r["phase"]): r for r in rows if r["part"] == "layers"}
    layers = list(dict.fromkeys(layer for layer, system, _ in times if system == "distnet"))

    def speed(layer: str, clock: str) -> float:
        fwd_bwd = {
            s: [
                f + b
                for f, b in zip(
                    times[layer, s, "forward"][clock],
                    times[layer, s, "backward"][clock],
                    strict=True,
                )
            ]
            for s in ("torch", "distnet")
        }
        torch, mine = fwd_bwd["torch"], fwd_bwd["distnet"]
        return statistics.median(a / b for a, b in zip(torch, mine, strict=True))

    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    ys = range(len(layers))
    ax.barh([y + 0.2 for y in ys], [speed(n, "wall_s") for n in layers], 0.4, label="wall time")
    ax.barh([y - 0.2 for y in ys], [speed(n, "cpu_s") for n in layers], 0.4, label="CPU time")
    ax.axvline(1, color="black", lw=0.8)
    ax.set_yticks(ys, layers, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("speed vs PyTorch (PyTorch's time / distnet's, fwd + bwd); > 1: distnet faster")
    ax.set_title(f"Conv and pool layers, batch 50, 1 thread, run of {run}")
    ax.legend(fontsize=8)
    return save(plt, fig, out / "conv_layers.png")


def save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "figures", help="where the PNGs go")
    parser.add_argument("--throughput-run", help="results.jsonl's run (its date)")
    parser.add_argument("--conv-run", help="conv_layers_results.jsonl's run (its date)")
    args = parser.parse_args(argv)
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("plots: needs matplotlib (pip install 'distnet-ray[plots]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.out.mkdir(parents=True, exist_ok=True)
    for path in (
        throughput(plt, args.throughput_run, args.out),
        step_split(plt, args.throughput_run, args.out),
        modes(plt, args.out),
        conv_layers(plt, args.conv_run, args.out),
    ):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
