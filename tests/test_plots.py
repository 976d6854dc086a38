"""The pictures' scripts run on the results they draw: benchmarks/plots.py on the recorded
benchmark results, docs/trace_timeline.py on a trace (matplotlib, the plots extra)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from distnet.distributed.server import ServerReport
from distnet.distributed.trace import Trace
from distnet.distributed.worker import WorkerReport

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def spans(document: dict) -> list[dict]:
    return [e for e in document["traceEvents"] if e["ph"] == "X"]


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def test_benchmark_plots_are_drawn_from_the_results_files(tmp_path):
    done = run("-m", "benchmarks.plots", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    for name in ("throughput", "step_split", "modes", "conv_layers"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(PNG)
    missing = run("-m", "benchmarks.plots", "--out", str(tmp_path), "--conv-run", "1999-01-01")
    assert missing.returncode != 0 and "no run '1999-01-01'" in missing.stderr


def test_a_trace_is_drawn_for_a_window_of_steps(tmp_path):
    clock = iter(float(t) for t in range(100))
    trace = Trace(clock=lambda: next(clock))  # the driver at 1 s per phase from t = 0
    for step in range(3):
        trace.phase("submitted", step)
        trace.reports(
            step,
            [WorkerReport(w, 1.0, 10, 0.5, started=1.0 + 3 * step, data_s=0.1) for w in (0, 1)],
            [ServerReport(step, 0.1, 1.0, 0.2, 2, started=1.6 + 3 * step)],
        )
        trace.phase("fetched", step)
        trace.phase("booked", step)
    path = trace.write(tmp_path / "t.json")
    document = json.loads(path.read_text())
    first = [e for e in spans(document) if e["name"] == "step 1"]
    assert [(e["tid"], e["ts"], e["dur"]) for e in first] == [(0, 4e6, 5e5), (1, 4e6, 5e5)]
    driver = [(e["name"], e["ts"], e["dur"]) for e in spans(document) if e["pid"] == 1]
    assert driver[-4:] == [  # clock: 0 at the start, then 1 s per phase, 10 at write
        ("submit", 6e6, 1e6),
        ("read", 7e6, 1e6),
        ("book", 8e6, 1e6),
        ("test, close logs, stop Ray", 9e6, 1e6),
    ]
    done = run("docs/trace_timeline.py", str(path), str(tmp_path / "t.png"), "--steps", "1:2")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "t.png").read_bytes().startswith(PNG)
    empty = run("docs/trace_timeline.py", str(path), str(tmp_path / "u.png"), "--steps", "7:9")
    assert empty.returncode != 0 and "no worker or server spans for steps 7:9" in empty.stderr
