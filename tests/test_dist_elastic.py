"""Elastic training (docs/elastic.md): block assignment, config validation, an elastic run
on the session Ray equal to the fixed run, and on a real multi-node cluster workers that
join and leave mid-run with the result unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from datagen import make_prepared_dataset
from raycluster import container_env, ray_cluster

from distnet.checkpoint import latest_checkpoint, load_checkpoint
from distnet.config import ConfigError, JobConfig
from distnet.distributed.driver import train
from distnet.distributed.elastic import assign_blocks

TEXT_TAG = "cluster/membership/text_summary"
BASE = {
    "model": {"dtype": "float64", "use_batchnorm": True, "dropout": 0.1},
    "data": {"augment_flip": True},
    "optim": {"update_rule": "adam", "learning_rate": 1e-3},
}


@pytest.mark.parametrize("blocks,workers", [(1, 1), (3, 1), (3, 2), (3, 3), (8, 3), (5, 4)])
def test_each_block_goes_to_exactly_one_worker_in_order(blocks, workers):
    shares = assign_blocks(blocks, workers)
    assert len(shares) == workers and all(shares)
    assert [b for share in shares for b in share] == list(range(blocks))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize("blocks,workers", [(3, 0), (3, 4)])
def test_more_workers_than_blocks_is_refused(blocks, workers):
    with pytest.raises(ValueError):
        assign_blocks(blocks, workers)


def job(**train):
    return JobConfig.from_dict({"train": train})


def test_elastic_config_cuts_each_step_into_max_workers_blocks():
    t = job(max_workers=4).train
    assert (t.elastic, t.min_workers, t.max_workers, t.workers) == (True, 1, 4, 4)
    assert job(min_workers=2, max_workers=3, workers=3).train.min_workers == 2
    assert not job(workers=3).train.elastic
    again = JobConfig.from_dict(JobConfig.from_dict({"train": {"max_workers": 3}}).to_dict())
    assert again.train.workers == 3


@pytest.mark.parametrize(
    "train,message",
    [
        ({"min_workers": 1}, "train.min_workers = 1 applies only with train.max_workers set"),
        ({"max_workers": 0}, "train.max_workers must be >= 1"),
        ({"min_workers": 3, "max_workers": 2}, "train.min_workers must be in 1..train.max_workers"),
        ({"min_workers": 0, "max_workers": 2}, "train.min_workers must be in 1..train.max_workers"),
        ({"max_workers": 4, "workers": 3}, "train.workers = 3 conflicts with train.max_workers"),
        ({"max_workers": 2, "mode": "async"}, 'needs mode = "sync"'),
        ({"max_workers": 2, "backup_workers": 1}, "needs no backup workers"),
        ({"max_workers": 2, "compression": "topk"}, 'needs compression "none" or "fp16"'),
        ({"max_workers": 2, "elastic_wait_s": 0}, "train.elastic_wait_s must be > 0"),
        ({"elastic_wait_s": 5}, "applies only with train.max_workers set"),
        ({"max_workers": 200}, "train.batch_size must be at least train.workers (200)"),
    ],
)
def test_bad_elastic_settings_are_one_line_errors(train, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        job(**train)


def test_an_elastic_run_equals_the_fixed_run_of_max_workers(ray_session, tiny_job):
    fixed = train(tiny_job(**BASE, train={"workers": 3}), progress=False, overwrite=True)
    elastic = train(
        tiny_job(**BASE, train={"max_workers": 3, "min_workers": 1}), progress=False, overwrite=True
    )
    assert elastic.steps == fixed.steps > 5
    assert elastic.transport == "tasks"
    np.testing.assert_array_equal(elastic.final_params, fixed.final_params)
    np.testing.assert_array_equal(elastic.bn_state, fixed.bn_state)
    assert elastic.loss_history == fixed.loss_history
    assert elastic.val_acc_history == fixed.val_acc_history


def test_a_worker_killed_with_steps_in_flight_is_dropped_and_its_blocks_redone(
    ray_session, tiny_job
):
    """Two parameter servers (a step can reach one and not the other); the session Ray
    has CPUs to spare, so a worker joins again after the loss."""
    import ray

    from distnet.distributed.hooks import Hooks
    from distnet.distributed.trace import Trace

    base = {**BASE, "optim": {"update_rule": "sgd_momentum", "learning_rate": 1e-2}}
    fixed = train(
        tiny_job(**base, train={"workers": 3, "servers": 2}), progress=False, overwrite=True
    )
    seen, phases = {}, []

    def on_step(event):
        seen[event.step] = len(event.group.workers)
        seen["group"] = event.group

    def on_phase(phase, step):
        phases.append(phase)
        if phase == "submitted" and step == 5:
            ray.kill(seen["group"].workers[0])  # step 4 is not booked yet, step 5 queued

    job = tiny_job(**base, train={"max_workers": 3, "servers": 2})
    trace = Trace(job)
    elastic = train(
        job,
        progress=False,
        overwrite=True,
        on_step=on_step,
        hooks=trace.hooks(Hooks(on_phase=on_phase)),
    )
    assert "recovering" not in phases
    np.testing.assert_array_equal(elastic.final_params, fixed.final_params)
    assert elastic.loss_history == fixed.loss_history
    changes = json.loads(load_checkpoint(latest_checkpoint(job.checkpoint.dir)).extra["membership"])
    assert [c[1] for c in changes[:2]] == [seen[0], seen[0] - 1], changes
    assert "lost" in changes[1][2]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(job.metrics.logdir, size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("cluster/workers")]
    assert logged == [(step, workers) for step, workers, _ in changes]
    lines = [t.tensor_proto.string_val[0].decode() for t in events.Tensors(TEXT_TAG)]
    assert lines == [f"step {s}: {what}, {n} workers" for s, n, what in changes]
    # --trace marks each change: an instant event and the "workers" counter.
    events = trace.events()
    marks = [(e["args"]["step"], e["args"]["workers"], e["name"]) for e in events if e["ph"] == "i"]
    assert marks == [tuple(c) for c in changes]
    counts = [e["args"]["workers"] for e in events if e["ph"] == "C"]
    assert counts == [n for _, n, _ in changes]


# --- a real multi-node cluster: workers join and leave mid-run ---------------------------
# The head (the driver and the parameter servers) has no CPU for workers; each worker node
# has one. The driver runs in the cluster's namespace (this file run as a script, `drive`
# below) and stops at gates: at step GROW_AT until the test has added a node, three steps
# after the third worker joined until the test has killed a node (with steps in flight).
GROW_AT = 6
LOSE_ALL_AT = 12  # after the checkpoint at step 10
CLUSTER_JOB = {
    "name": "elastic",
    "seed": 4,
    "model": {"kind": "fc", "hidden_dims": [16], "weight_scale": 1e-2, **BASE["model"]},
    "data": BASE["data"],
    "optim": BASE["optim"],
    "train": {"num_epochs": 10, "batch_size": 30, "num_train_samples": 60},
    "checkpoint": {"every_steps": 10},
    "metrics": {"log_every_steps": 1},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with ray_cluster(workers=2, head_cpus=0) as started:
        started.data_path = make_prepared_dataset(started.shared / "data", shards=4, num_val=60)
        yield started


class Driver:
    """`drive` in the cluster's namespace, read line by line (every read bounded)."""

    def __init__(self, cluster, job: dict, out: Path, plan: str):
        out.mkdir()
        self.out = out
        (out / "job.json").write_text(json.dumps(job))
        env = container_env(cluster.services["ray-head"], cluster.shared)
        argv = [sys.executable, __file__, str(out / "job.json"), str(out), cluster.address, plan]
        self.process = subprocess.Popen(
            cluster.netns.argv(argv), env=env, stdout=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.strip())

    def wait_for(self, prefix: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.lines if line.startswith(prefix)]
            if found:
                return found[0]
            assert self.process.poll() is None or self.reader.is_alive(), self.lines[-20:]
            time.sleep(0.05)
        raise AssertionError(f"no {prefix!r} in {timeout} s: {self.lines[-20:]}")

    def go(self, name: str) -> None:
        (self.out / f"go-{name}").touch()

    def finish(self, timeout: float = 120) -> int:
        code = self.process.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code

    def workers(self) -> list[int]:
        """The workers of each booked step."""
        return [int(line.split()[3]) for line in self.lines if line.startswith("step ")]


def job_in(cluster, run: str, **train) -> dict:
    job = json.loads(json.dumps(CLUSTER_JOB))
    job["data"]["path"] = str(cluster.data_path)
    job["train"].update(train)
    job["checkpoint"]["dir"] = str(cluster.shared / run / "ckpt")
    job["metrics"]["logdir"] = str(cluster.shared / run / "runs")
    return job


_FIXED: dict = {}


def fixed_run(job: dict, tmp_path: Path):
    """The final parameters of the same job with 3 fixed workers, on the session Ray (the
    cluster tests' jobs differ only in where they write)."""
    if "params" not in _FIXED:
        _FIXED["params"] = _fixed_run(job, tmp_path).final_params
    return _FIXED["params"]


def _fixed_run(job: dict, tmp_path: Path):
    raw = json.loads(json.dumps(job))
    for key in ("min_workers", "max_workers", "elastic_wait_s"):
        raw["train"].pop(key, None)
    raw["train"]["workers"] = 3
    raw["checkpoint"]["dir"] = str(tmp_path / "fixed-ckpt")
    raw["metrics"]["logdir"] = str(tmp_path / "fixed-runs")
    return train(JobConfig.from_dict(raw), progress=False, overwrite=True)


def test_workers_join_and_leave_mid_run_and_the_result_is_the_fixed_runs(
    cluster, ray_session, tmp_path
):
    job = job_in(cluster, "grow", min_workers=1, max_workers=3)
    driver = Driver(cluster, job, tmp_path / "grow", "grow-shrink")
    driver.wait_for("gate grow")
    cluster.add_worker()  # a third node: its CPU is free
    driver.go("grow")
    driver.wait_for("gate kill")
    victim = cluster.workers[0]
    victim.kill()  # with a step in flight (the gate is just after a submit)
    cluster.nodes.remove(victim)
    driver.go("kill")
    assert driver.finish() == 0, driver.lines[-20:]
    workers = driver.workers()
    assert workers[0] == 2 and 3 in workers and workers[-1] == 2, workers
    grown, shrunk = workers.index(3), len(workers) - workers[::-1].index(3)
    assert grown < shrunk and set(workers[grown:shrunk]) == {3}
    assert not [line for line in driver.lines if line.startswith("phase recover")]
    booked = [int(line.split()[1]) for line in driver.lines if line.startswith("step ")]
    assert booked == list(range(len(booked)))  # every step once, in order
    state = load_checkpoint(latest_checkpoint(cluster.shared / "grow" / "ckpt"))
    changes = json.loads(state.extra["membership"])
    assert [c[1] for c in changes] == [2, 3, 2] and state.extra["workers"] == 2
    assert "joined" in changes[1][2] and "lost" in changes[2][2]
    assert state.step == len(booked) == 80
    fixed = fixed_run(job, tmp_path)
    np.testing.assert_array_equal(np.load(tmp_path / "grow" / "final.npy"), fixed)
    np.testing.assert_array_equal(state.params, fixed)


def test_the_last_node_lost_waits_then_stops_with_a_checkpoint_to_resume(
    cluster, ray_session, tmp_path
):
    job = job_in(cluster, "lose", min_workers=1, max_workers=3, elastic_wait_s=4)
    driver = Driver(cluster, job, tmp_path / "lose", "lose-all")
    driver.wait_for("gate kill")
    for node in list(cluster.workers):
        node.kill()
        cluster.nodes.remove(node)
    driver.go("kill")
    assert driver.finish() == 3, driver.lines[-20:]
    error = driver.wait_for("error:")
    assert "only 0 of train.min_workers = 1 workers for 4 s" in error, error
    assert "continue with --resume" in error
    state = load_checkpoint(latest_checkpoint(cluster.shared / "lose" / "ckpt"))
    assert LOSE_ALL_AT - 2 <= state.step <= LOSE_ALL_AT + 1
    assert json.loads(state.extra["membership"])[-1][1] == 0
    # --resume on the session Ray (its 4 CPUs: 3 workers) ends exactly as the fixed run.
    resumed = train(JobConfig.from_dict(job), resume=True, progress=False)
    np.testing.assert_array_equal(resumed.final_params, fixed_run(job, tmp_path))


def drive(job_file: str, out: str, address: str, plan: str) -> int:
    """The driver: train the job, printing each booked step's workers and each phase,
    waiting at the gates of `plan` ("grow-shrink", or "lose-all": a gate at step
    LOSE_ALL_AT) for the test's go-NAME files; the final parameters to out/."""
    import ray

    from distnet.distributed.hooks import Hooks
    from distnet.errors import DistnetError

    out_dir, grown = Path(out), []

    def gate(name: str) -> None:
        print(f"gate {name}", flush=True)
        deadline = time.monotonic() + 120
        while not (out_dir / f"go-{name}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def on_phase(phase: str, step: int) -> None:
        print(f"phase {phase} {step}", flush=True)
        if phase != "submitted":
            return
        if plan == "lose-all":
            if step == LOSE_ALL_AT:
                gate("kill")
        elif step == GROW_AT:
            gate("grow")
        elif grown and step == grown[0] + 3:
            gate("kill")
        elif step > GROW_AT and not grown:
            time.sleep(0.2)  # slow steps while the new node's worker starts

    def on_step(event) -> None:
        workers = len(event.group.workers)
        print(f"step {event.step} workers {workers}", flush=True)
        if workers == 3 and not grown:
            grown.append(event.step)

    job = JobConfig.from_dict(json.loads(Path(job_file).read_text()))
    ray.init(address=address, _node_ip_address="127.0.0.2", logging_level="ERROR")
    try:
        result = train(
            job,
            progress=False,
            overwrite=True,
            on_step=on_step,
            hooks=Hooks(on_phase=on_phase),
        )
    except DistnetError as err:
        print(f"error: {err}", flush=True)
        return 3
    np.save(out_dir / "final.npy", result.final_params)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(drive(*sys.argv[1:5]))
