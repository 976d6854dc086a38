"""Test and benchmark hooks of a run: not job settings (a job file cannot set them).

    train(job, hooks=Hooks(worker_delay_s=0.2, on_phase=lambda phase, step: ...))

`worker_delay_s` makes worker 0 a straggler: it sleeps that long in every gradient step
(the backup-worker, SSP and mode benchmarks and tests need one). `on_phase(phase, step)`
is called by the driver's main thread at each of the PHASES below, outside the moments
when the books are written, so a test may kill actors or send the driver SIGINT from it
to land a failure exactly there. `step` is a synchronous(-equivalent) step: the 0-based
index of the step for the per-step phases, the number of completed steps for the others.
`on_reports(step, worker_reports, server_reports)` follows each "fetched" with what was
read: the step's WorkerReports and ServerReports (async/SSP: N gradients' worth, K server
reports per gradient in order); the --trace timeline (trace.py) is built from both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from distnet.errors import DistnetError

PHASES = {
    # per step (async/SSP: "submitted" per gradient, with the local step it computes)
    "submitted": "the step was submitted to the actors",
    "fetched": "its reports were read from the actors, not yet booked",
    "booked": "it is in the books (history, counters), before on_step",
    # at a boundary: `step` steps completed
    "evaluating": "an epoch ended; evaluating its train and val accuracy begins",
    "evaluated": "its accuracies are known, not yet booked",
    "checkpointing": "a checkpoint is about to be written (boundaries and the run's end)",
    "checkpointed": "it was written",
    # recovery: `step` = the steps in the books when the failure was caught / restored
    "recovering": "an actor failure was caught; recovery begins",
    "recovered": "the actors hold the restored checkpoint; training goes on",
}


@dataclass(frozen=True)
class Hooks:
    """What a test or benchmark injects into a run (see the module docstring)."""

    worker_delay_s: float = 0.0
    on_phase: Callable[[str, int], None] | None = None
    on_reports: Callable[[int, list, list], None] | None = None
    on_membership: Callable[[int, int, str], None] | None = None

    def __post_init__(self) -> None:
        if not (
            isinstance(self.worker_delay_s, (int, float))
            and math.isfinite(self.worker_delay_s)
            and self.worker_delay_s >= 0
        ):
            raise DistnetError(
                f"Hooks.worker_delay_s must be a number >= 0, got {self.worker_delay_s!r}"
            )

    def phase(self, name: str, step: int) -> None:
        """Call on_phase(name, step); `name` is one of PHASES."""
        if self.on_phase is not None:
            self.on_phase(name, step)

    def reports(self, step: int, worker_reports: list, server_reports: list) -> None:
        """Call on_reports with a fetched step's reports."""
        if self.on_reports is not None:
            self.on_reports(step, worker_reports, server_reports)

    def membership(self, step: int, workers: int, what: str) -> None:
        """Call on_membership: an elastic run's workers changed to `workers` at `step`."""
        if self.on_membership is not None:
            self.on_membership(step, workers, what)


NO_HOOKS = Hooks()
