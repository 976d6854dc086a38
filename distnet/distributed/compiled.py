"""Synchronous steps as one Ray Compiled Graph, compiled once per actor group.

With Ray tasks every step is N + K task submissions whose arguments and results pass
through the driver (their owner) and the object store: on this kind of 2-core machine that
costs 3-12 ms per step whatever the network. A compiled graph sets up shared-memory
channels between the actors once; a step is then a message into the graph:

    server k: serve(step) -> worker i: compute_served(epoch, step_in_epoch, *served)
              -> server k: apply_served(step, weights, *worker outputs) -> driver

The driver keeps one step queued behind the one it reads, so the actors never wait for it
(two queued steps, at IN_FLIGHT = 3, deadlocked a graph whose workers ran on other nodes).
The result is bit-identical to the task path (same calls, same summation order).

Reading a graph's output in the driver spins: Ray 2.60's PlasmaObjectHeader::ReadAcquire
loops on sched_yield, which took a whole core on this 2-core machine (the large net's step
went from 105 to 154 ms). So the driver sleeps through most of a step before it reads
(`read`); with steps queued behind, a late read delays nothing.

Two limits of Ray 2.60's compiled graphs shape `close`: a torn-down graph whose channels
carried messages over about 1 MB leaves its actors' loops hanging, and only the process
that compiled a graph may run it. So a graph is torn down with its actors killed, and a
failure mid-run is recovered by a fresh actor group (see driver.py). Teardown itself can
hang: when an actor dies, Ray's failure monitor starts its own teardown without killing
the actors, holds the teardown lock and waits without a timeout for their loops (seen as a
driver stuck for 21 minutes; benchmarks/kill_soak.py reproduces it). `close` therefore
never waits unbounded: it kills the actors (which ends those loops) and abandons a graph
whose teardown still does not finish, so that neither recovery nor ray.shutdown waits on it.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial

import ray
from ray.dag import DAGContext, InputNode, MultiOutputNode, compiled_dag_node

from distnet.distributed.group import ActorGroup, StepRefs

# Seconds: how long one step may take (a slow worker, a long straggler delay) and how long
# teardown waits for an actor's loop before killing it.
STEP_TIMEOUT_S = 24 * 3600
TEARDOWN_TIMEOUT_S = 1
CLOSE_TIMEOUT_S = 5  # for each of: a healthy teardown, the teardown after killing actors
IN_FLIGHT = 3  # steps the driver may submit before reading the oldest
SLEEP_SHARE = 0.8  # of the usual step time, slept before reading a step


class CompiledSteps:
    """Submits the synchronous steps of `group` through one compiled graph."""

    def __init__(self, group: ActorGroup, message_bytes: int):
        context = DAGContext.get_current()
        context.get_timeout = context.submit_timeout = STEP_TIMEOUT_S
        context.teardown_timeout = TEARDOWN_TIMEOUT_S
        self.group = group
        with InputNode() as step_input:  # (step, epoch, step_in_epoch)
            served = [s.serve.bind(step_input[0]) for s in group.servers]
            outputs = [
                w.compute_served.bind(step_input[1], step_input[2], *served) for w in group.workers
            ]
            applied = [
                s.apply_served.bind(step_input[0], group.weights, *outputs) for s in group.servers
            ]
            graph = MultiOutputNode(applied)
        # Channels sized for the largest message up front (they would grow on demand).
        self.graph = graph.experimental_compile(
            _buffer_size_bytes=message_bytes, _max_inflight_executions=IN_FLIGHT
        )
        self.step_s = 0.0  # moving average of the time between two steps' results
        self.last_read: float | None = None  # when the previous result came, if queued

    def step(self, step: int, epoch: int, step_in_epoch: int) -> StepRefs:
        """Submit one synchronous step; returns at once."""
        refs = self.graph.execute(step, epoch, step_in_epoch)
        return StepRefs(
            step, [], [], list(range(len(self.group.workers))), reader=partial(self.read, refs)
        )

    def read(self, refs: list, timeout: float | None = None) -> tuple[list, list]:
        """(WorkerReports, ServerReports) of a submitted step: sleep, then wait for it.

        A step can be read once: a read interrupted by Ctrl-C loses its reports."""
        if self.last_read is not None and timeout is None:
            wake = self.last_read + SLEEP_SHARE * self.step_s
            time.sleep(max(0.0, wake - time.perf_counter()))
        results = ray.get(refs, timeout=timeout)  # per server: (ServerReport, WorkerReports)
        now = time.perf_counter()
        if self.last_read is not None:
            self.step_s = 0.8 * self.step_s + 0.2 * (now - self.last_read)
        self.last_read = now
        return results[0][1], [server_report for server_report, _ in results]

    def paused(self) -> None:
        """No step is queued (an epoch's end, a checkpoint): the next read must not sleep."""
        self.last_read = None

    def close(self, broken: bool = False) -> None:
        """Tear the graph down and kill its actors, within 2 x CLOSE_TIMEOUT_S (see the
        module docstring). A `broken` graph (a failure, an interrupted read) gets its actors
        killed first."""
        if broken:
            # Ray logs each call into a killed actor as an error with its traceback; here
            # they are expected, and the user has the failure that broke the graph already.
            logging.getLogger("ray.dag.compiled_dag_node").setLevel(logging.CRITICAL)
            self.group.kill()
        teardown = threading.Thread(
            target=self.graph.teardown,
            kwargs={"kill_actors": True},
            daemon=True,
            name="distnet-graph-teardown",
        )
        teardown.start()
        teardown.join(CLOSE_TIMEOUT_S)
        if teardown.is_alive() and not broken:
            self.group.kill()  # ends the loops that Ray's own teardown may be waiting on
            teardown.join(CLOSE_TIMEOUT_S)
        # Abandon it: ray.shutdown and the graph's __del__ would otherwise tear it down
        # again, unbounded (private Ray 2.60 state; the graph is deprecated upstream).
        compiled_dag_node._compiled_dags.pop(self.graph.get_id(), None)
        if teardown.is_alive():
            self.graph._is_teardown = True
