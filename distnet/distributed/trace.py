"""A run's timeline (`distnet train --trace FILE`) in Chrome's Trace Event Format, which
Perfetto (ui.perfetto.dev), chrome://tracing and docs/trace_timeline.py show:

    trace = Trace(job)
    try:
        train(job, hooks=trace.hooks())
    finally:
        trace.write("run.trace.json")

It is built on the driver from what the driver already sees, so tracing costs the actors
nothing: the hooks' phases give the driver's spans (each one the time since the previous
phase, named after the phase that ends it: "submit", "read" of a step's reports, "book",
"evaluate", "checkpoint", "recover"), and each step's reports give the actors' spans at
the times the actors measured: a worker's "step N" (WorkerReport.started, compute_s) split
into "data" (parameters copied in, the minibatch read and prepared: data_s), "forward"
(the model's forward pass up to the loss: forward_s) and "backward" (the rest: the
gradient, its encoding, a test straggler's sleep), a server shard's "update N"
(ServerReport.started, update_s); in sync mode the gaps between them as "parameters in"
(a worker, since the previous step's last update) and "gradients in" (a server, since the
step's last gradient): transfer and scheduling.
Async/SSP: "step N" is the synchronous-equivalent step whose N gradients a worker's span
belongs to.

Events are "X" (complete) events, ts and dur in microseconds since the trace began; one
process per kind of actor (driver, parameter servers, workers) and one thread per actor,
named by "M" metadata events. Times are each process's wall clock (time.time()): one clock
on one machine; across nodes they are as far apart as the nodes' clocks (NTP: about 1 ms).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from distnet.atomic import atomic_write
from distnet.config import JobConfig
from distnet.distributed.hooks import NO_HOOKS, Hooks
from distnet.errors import DistnetError

DRIVER, SERVERS, WORKERS = 1, 2, 3  # trace "processes": one per kind of actor
PROCESS_NAMES = {DRIVER: "driver", SERVERS: "parameter servers", WORKERS: "workers"}
# A driver span is named after the phase that ends it (hooks.PHASES)...
ENDED_BY = {
    "submitted": "submit",
    "fetched": "read",  # waiting for the step's reports
    "booked": "book",  # history, TensorBoard, progress (and on_step after the previous one)
    "evaluated": "evaluate",
    "checkpointed": "checkpoint",
    "recovered": "recover",
    "recovering": "failure",  # until the failure surfaced
    # the steps read, what precedes a boundary's work (the last reads, parameters refreshed)
    "evaluating": "settle",
    "checkpointing": "settle",
}
# ... or after what the run did between two phases.
BETWEEN = {("evaluated", "checkpointing"): "book epoch"}
ENDINGS = {  # the last span: from the last phase to `write`
    "finished": "test, close logs, stop Ray",
    "interrupted": "interrupted: settle, checkpoint, stop Ray",
    "failed": "failed",
}


class Trace:
    """Collects one run's spans; `hooks()` feeds it, `write` saves it."""

    def __init__(self, job: JobConfig | None = None, clock=time.time):
        self.clock = clock
        self.start = self.last = clock()
        self.last_phase = "start"
        self.spans: list[tuple] = []  # (pid, tid, name, start, dur, args), seconds
        self.info = {} if job is None else {"job": job.name, "mode": job.train.mode}
        self.servers = job.train.servers if job is not None else None
        self.sync = job is not None and job.train.mode == "sync"
        self.updated: tuple[int, float] | None = None  # sync: (step, its last update's end)
        self.submitted: dict[int, float] = {}  # sync: when each unread step was submitted
        self.marks: list[tuple] = []  # elastic membership changes: (time, step, workers, what)

    def hooks(self, base: Hooks = NO_HOOKS) -> Hooks:
        """`base` (a test's or benchmark's hooks) with this trace listening too."""

        def on_phase(name: str, step: int) -> None:
            self.phase(name, step)
            base.phase(name, step)

        def on_reports(step: int, workers: list, servers: list) -> None:
            self.reports(step, workers, servers)
            base.reports(step, workers, servers)

        def on_membership(step: int, workers: int, what: str) -> None:
            self.marks.append((self.clock(), step, workers, what))
            base.membership(step, workers, what)

        return Hooks(base.worker_delay_s, on_phase, on_reports, on_membership)

    def phase(self, name: str, step: int) -> None:
        """The driver reached phase `name` (hooks.PHASES): a span since the previous one."""
        now = self.clock()
        if self.sync and name == "submitted":
            self.submitted[step] = now
        span = BETWEEN.get((self.last_phase, name)) or ENDED_BY.get(name)
        if self.last_phase == "start":
            span = "start: dataset check, Ray, actors, first submission"
        if span is not None and now > self.last:
            args = {"step": step, "until": name}  # the phase that ended it
            self.spans.append((DRIVER, 0, span, self.last, now - self.last, args))
        self.last, self.last_phase = now, name

    def reports(self, step: int, workers: list, servers: list) -> None:
        """A step's WorkerReports and ServerReports (hooks.Hooks.on_reports)."""
        for r in workers:
            args = {"step": step, "loss": r.loss, "samples": r.num_samples}
            self.spans.append((WORKERS, r.worker, f"step {step}", r.started, r.compute_s, args))
            parts = [("data", r.data_s), ("forward", r.forward_s)]
            parts.append(("backward", r.compute_s - r.data_s - r.forward_s))
            begin = r.started
            for name, dur in parts:
                self.spans.append((WORKERS, r.worker, name, begin, dur, {"step": step}))
                begin += dur
        k = self.servers or len(servers)  # async/SSP: K reports per gradient, in order
        for i, s in enumerate(servers):
            args = {"step": step, "learning_rate": s.learning_rate, "received": s.received}
            self.spans.append((SERVERS, i % k, f"update {step}", s.started, s.update_s, args))
        if self.sync and workers and servers:
            self._transfers(step, workers, servers)

    def _transfers(self, step: int, workers: list, servers: list) -> None:
        """Sync: the gaps a step's data crosses, as spans where they end: "parameters in"
        on a worker (from the previous step's last update, or the step's submission if
        later: after an evaluation), "gradients in" on a server (from the step's last
        gradient): transfer and scheduling, as measured."""
        previous, submitted = self.updated, self.submitted.pop(step, None)
        if previous is not None and previous[0] == step - 1 and submitted is not None:
            ready = max(previous[1], submitted)
            for r in workers:
                if r.started > ready:
                    gap = r.started - ready
                    self.spans.append(
                        (WORKERS, r.worker, "parameters in", ready, gap, {"step": step})
                    )
        last_gradient = max(r.started + r.compute_s for r in workers)
        for k, s in enumerate(servers):
            if s.started > last_gradient:
                gap = s.started - last_gradient
                self.spans.append((SERVERS, k, "gradients in", last_gradient, gap, {"step": step}))
        self.updated = (step, max(s.started + s.update_s for s in servers))

    def events(self, ending: str = "finished") -> list[dict]:
        """The Trace Event Format events: metadata, then the spans in time order (with
        the `ending` span, see ENDINGS, from the last phase to now)."""
        spans = list(self.spans)
        now = self.clock()
        if now > self.last:
            spans.append((DRIVER, 0, ENDINGS[ending], self.last, now - self.last, {}))
        # A parent before its children: by start, then the longer first.
        spans.sort(key=lambda s: (s[3], -s[4]))
        events = []
        for pid, name in PROCESS_NAMES.items():
            events.append(_meta("process_name", pid, 0, name))
            events.append(_meta("process_sort_index", pid, 0, pid, key="sort_index"))
        for pid, tid in sorted({(s[0], s[1]) for s in spans}):
            label = {DRIVER: "driver", SERVERS: f"server {tid}", WORKERS: f"worker {tid}"}[pid]
            events.append(_meta("thread_name", pid, tid, label))
            events.append(_meta("thread_sort_index", pid, tid, tid, key="sort_index"))
        events += [
            {
                "ph": "X",
                "name": name,
                "pid": pid,
                "tid": tid,
                "ts": round((start - self.start) * 1e6, 1),
                "dur": round(max(dur, 0.0) * 1e6, 1),
                "args": args,
            }
            for pid, tid, name, start, dur, args in spans
        ]
        # Elastic membership: an instant mark across the timeline and a "workers" counter.
        for when, step, workers, what in self.marks:
            ts = round((when - self.start) * 1e6, 1)
            args = {"step": step, "workers": workers}
            events.append(
                {"ph": "i", "s": "g", "name": what, "pid": DRIVER, "tid": 0, "ts": ts, "args": args}
            )
            events.append(
                {
                    "ph": "C",
                    "name": "workers",
                    "pid": DRIVER,
                    "ts": ts,
                    "args": {"workers": workers},
                }
            )
        return events

    def write(self, path: str | os.PathLike, ending: str = "finished") -> Path:
        """Write the trace to `path` atomically (readers see the old file or the new)."""
        document = {
            "traceEvents": self.events(ending),
            "displayTimeUnit": "ms",
            "otherData": {**self.info, "ending": ending, "clock": "time.time() per process"},
        }
        path = Path(path)
        with atomic_write(path) as handle:
            handle.write(json.dumps(document, separators=(",", ":")).encode())
        return path


def check_trace_path(path: str | os.PathLike) -> None:
    """DistnetError unless a trace can be written at `path` (checked before a run starts)."""
    path = Path(path)
    if path.is_dir():
        raise DistnetError(f"--trace {path} is a directory; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise DistnetError(f"--trace {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise DistnetError(f"--trace {path}: cannot write into {parent}")


def _meta(name: str, pid: int, tid: int, value, key: str = "name") -> dict:
    return {"ph": "M", "name": name, "pid": pid, "tid": tid, "args": {key: value}}
