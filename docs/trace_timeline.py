"""Draw a `distnet train --trace FILE` timeline as a PNG (Perfetto's UI needs the network;
this needs matplotlib: pip install 'distnet-ray[plots]').

    python docs/trace_timeline.py run.trace.json docs/trace_timeline.png [--steps 240:247]

One row per actor (the driver, each server shard, each worker), one bar per span, coloured
by what it is; a worker's step is drawn as its data, forward and backward parts. --steps
A:B shows the time from step A's first span to step B's last (default: the whole run); a
driver span of step B is an evaluation or checkpoint after B steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COLOURS = {
    "data": "#9ecae1",
    "forward": "#6baed6",
    "backward": "#08519c",
    "update": "#e6550d",
    "parameters in": "#c7e9c0",
    "gradients in": "#fdd0a2",
    "submit": "#74c476",
    "read": "#d9d9d9",
    "book": "#fdae6b",
    "evaluate": "#756bb1",
    "book epoch": "#bcbddc",
    "settle": "#fee391",
    "checkpoint": "#e7298a",
    "recover": "#e31a1c",
    "failure": "#fb9a99",
}
OTHER = "#969696"


def kind(name: str) -> str:
    """The legend entry of a span: its name without the step number."""
    return "update" if name.startswith("update ") else name


def load(path: Path) -> tuple[list[dict], dict]:
    document = json.loads(path.read_text())
    events = document["traceEvents"] if isinstance(document, dict) else document
    names = {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in events
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    return [e for e in events if e["ph"] == "X"], names


def window(spans: list[dict], steps: str | None) -> tuple[float, float]:
    """Microseconds [start, end) of the steps A:B (inclusive), or of the whole trace."""
    if steps is None:
        return min(e["ts"] for e in spans), max(e["ts"] + e["dur"] for e in spans)
    first, _, last = steps.partition(":")
    a, b = int(first), int(last or first)
    # The actors' spans of those steps, and the driver's (an evaluation or checkpoint after
    # step B's reads is the driver's span with step B + 1: steps completed).
    chosen = [
        e
        for e in spans
        if a <= e["args"].get("step", -1) <= b
        and (e["pid"] != 1 or e["args"].get("until") not in ("submitted", "fetched", "booked"))
    ]
    if not chosen:
        raise SystemExit(f"trace_timeline: no worker or server spans for steps {steps}")
    return min(e["ts"] for e in chosen), max(e["ts"] + e["dur"] for e in chosen)


def draw(spans: list[dict], names: dict, start: float, end: float, title: str, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(names)  # (pid, tid): driver, servers, workers
    fig, ax = plt.subplots(figsize=(12, 0.6 * len(rows) + 1.6), dpi=120)
    seen = {}
    steps_shown = sum(
        1 for e in spans if e["name"].startswith("step ") and start <= e["ts"] <= end
    ) / max(1, sum(1 for r in rows if r[0] == 3))
    for e in spans:
        if (e["pid"], e["tid"]) not in names or e["ts"] + e["dur"] <= start or e["ts"] >= end:
            continue
        if e["name"].startswith("step "):  # drawn as its parts, its number above them
            if steps_shown <= 30:
                middle = (e["ts"] + e["dur"] / 2 - start) / 1e3
                y = len(rows) - 1 - rows.index((e["pid"], e["tid"]))
                ax.text(middle, y + 0.38, e["name"][5:], ha="center", va="bottom", fontsize=6)
            continue
        label = kind(e["name"])
        colour = COLOURS.get(label, OTHER)
        y = len(rows) - 1 - rows.index((e["pid"], e["tid"]))
        left = (max(e["ts"], start) - start) / 1e3
        width = (min(e["ts"] + e["dur"], end) - max(e["ts"], start)) / 1e3
        width = max(width, (end - start) / 1e3 / 600)  # a 0.1 ms update stays visible
        bar = ax.barh(y, width, left=left, height=0.7, color=colour, lw=0)
        seen.setdefault(label if label in COLOURS else "other", bar)
    ax.set_yticks(range(len(rows)), [names[r] for r in reversed(rows)])
    ax.set_xlim(0, (end - start) / 1e3)
    ax.set_xlabel("ms")
    ax.set_title(title, fontsize=10)
    ax.legend(seen.values(), seen.keys(), loc="upper center", bbox_to_anchor=(0.5, -0.22),
              ncol=min(len(seen), 6), fontsize=8, frameon=False)  # fmt: skip
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", type=Path, help="a distnet train --trace FILE")
    parser.add_argument("png", type=Path, help="the picture to write")
    parser.add_argument("--steps", metavar="A:B", help="show steps A to B (default: all)")
    parser.add_argument("--title", help="the picture's title (default: the trace's job)")
    args = parser.parse_args(argv)
    spans, names = load(args.trace)
    start, end = window(spans, args.steps)
    info = json.loads(args.trace.read_text()).get("otherData", {})
    title = args.title or f"{info.get('job', args.trace.name)}: steps {args.steps or 'all'}"
    draw(spans, names, start, end, title, args.png)
    print(f"wrote {args.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
