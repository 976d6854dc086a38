"""Raw benchmark results as JSON Lines, appended one run at a time.

A run is one line `{"record": "run", ...}` (date, command, machine, ...) followed by one
line per measurement `{"record": "measurement", "run": <its date>, ...}`. A new run adds
lines and never rewrites the earlier ones, so git keeps every run's raw numbers (the
tables in benchmarks/README.md can be rendered again from them) at the cost of the new
lines only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

RUN, MEASUREMENT = "run", "measurement"


def append_run(path: Path, run: dict, records: list[dict]) -> None:
    """Append a run's header line and one line per record, in one write, on disk."""
    lines = [{"record": RUN, **run}]
    lines += [{"record": MEASUREMENT, "run": run["date"], **r} for r in records]
    text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_runs(path: Path) -> list[tuple[dict, list[dict]]]:
    """Every run in the file, in order: (header without "record", its records)."""
    runs: list[tuple[dict, list[dict]]] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            entry = json.loads(line)
            kind = entry.pop("record", None)
            if kind == RUN:
                runs.append((entry, []))
            elif kind == MEASUREMENT and runs and entry.pop("run") == runs[-1][0]["date"]:
                runs[-1][1].append(entry)
            else:
                raise ValueError(
                    f"{path}:{number}: not a run header or a measurement of the run before it"
                )
    return runs
