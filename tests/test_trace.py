"""`distnet train --trace FILE`: the timeline of a real run on the session Ray agrees with
the TensorBoard time split the run logs, has a span per worker and server shard for every
step at the times the actors measured, and is written at Ctrl-C too."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from collections import defaultdict

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from distnet.cli import main
from distnet.distributed.driver import train
from distnet.distributed.trace import DRIVER, SERVERS, WORKERS, Trace

STEPS = 12  # two epochs of 6 steps on the tiny dataset (batch 40)
SLOP_S = 0.002  # timestamps of different processes: one clock, rounding to 0.1 us


def scalars(logdir) -> dict[str, dict[int, float]]:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0}).Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def spans(document: dict) -> list[dict]:
    return [e for e in document["traceEvents"] if e["ph"] == "X"]


def seconds(event: dict) -> tuple[float, float]:
    return event["ts"] / 1e6, (event["ts"] + event["dur"]) / 1e6


@pytest.fixture(scope="module")
def traced_run(ray_session, tiny_dataset, tmp_path_factory):
    """A 2-worker, 2-server run with every step logged, and its trace as loaded JSON."""
    from distnet.config import JobConfig

    root = tmp_path_factory.mktemp("traced")
    job = JobConfig.from_dict(
        {
            "name": "traced",
            "seed": 3,
            "data": {"path": tiny_dataset},
            "model": {"kind": "fc", "hidden_dims": [16], "weight_scale": 1e-2},
            "train": {"num_epochs": 2, "batch_size": 40, "workers": 2, "servers": 2},
            "checkpoint": {"dir": str(root / "ckpt")},
            "metrics": {"logdir": str(root / "runs"), "log_every_steps": 1},
        }
    )
    trace = Trace(job)
    train(job, progress=False, hooks=trace.hooks())
    path = trace.write(root / "run.trace.json")
    return json.loads(path.read_text()), scalars(job.metrics.logdir)


def test_the_trace_names_one_track_per_actor(traced_run):
    document, _ = traced_run
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in document["traceEvents"]
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    assert threads == {
        (DRIVER, 0): "driver",
        (SERVERS, 0): "server 0",
        (SERVERS, 1): "server 1",
        (WORKERS, 0): "worker 0",
        (WORKERS, 1): "worker 1",
    }
    for e in spans(document):
        assert e["dur"] >= 0 and e["ts"] >= 0 and (e["pid"], e["tid"]) in threads


def test_every_step_has_a_span_per_worker_and_server(traced_run):
    document, _ = traced_run
    per_track = defaultdict(list)
    for e in spans(document):
        per_track[e["pid"], e["tid"]].append(e["name"])
    for worker in (0, 1):
        names = per_track[WORKERS, worker]
        assert sorted(n for n in names if n.startswith("step ")) == sorted(
            f"step {t}" for t in range(STEPS)
        )
        assert [names.count(n) for n in ("data", "forward", "backward")] == [STEPS] * 3
    for server in (0, 1):
        updates = [n for n in per_track[SERVERS, server] if n.startswith("update ")]
        assert sorted(updates) == sorted(f"update {t}" for t in range(STEPS))
        assert set(per_track[SERVERS, server]) - set(updates) <= {"gradients in"}
    driver = per_track[DRIVER, 0]
    assert driver[0].startswith("start: ")  # it ends with step 0's submission
    assert [driver.count(n) for n in ("submit", "read", "book")] == [STEPS - 1, STEPS, STEPS]
    assert driver.count("evaluate") == 2 and driver.count("checkpoint") == 2


def test_the_spans_agree_with_the_tensorboard_time_split(traced_run):
    document, logged = traced_run
    step_of = defaultdict(dict)  # step -> {(pid, tid, name or the phase ending it): event}
    for e in spans(document):
        if "step" in e["args"]:
            name = e["args"].get("until", e["name"])
            step_of[e["args"]["step"]][e["pid"], e["tid"], name] = e
    reads = [step_of[t][DRIVER, 0, "fetched"] for t in range(STEPS)]
    transfers = 0
    for t in range(STEPS):
        s = step_of[t]
        workers = [s[WORKERS, i, f"step {t}"] for i in (0, 1)]
        servers = [s[SERVERS, k, f"update {t}"] for k in (0, 1)]
        for i, w in enumerate(workers):  # the trace's durations are the logged ones
            assert w["dur"] / 1e6 == pytest.approx(logged[f"worker/compute_s/{i}"][t], abs=1e-6)
            # data, forward and backward follow each other and fill the step
            parts = [s[WORKERS, i, name] for name in ("data", "forward", "backward")]
            assert all(p["dur"] > 0 for p in parts[1:]), parts
            assert parts[0]["ts"] == pytest.approx(w["ts"], abs=1)
            for before, after in itertools.pairwise(parts):
                assert after["ts"] == pytest.approx(before["ts"] + before["dur"], abs=1)
            assert sum(p["dur"] for p in parts) == pytest.approx(w["dur"], abs=1)
        assert max(e["dur"] for e in servers) / 1e6 == pytest.approx(
            logged["time/server_update_s"][t], abs=1e-6
        )
        # and they sit where the actors measured them: a step's workers run after it was
        # submitted and after the previous update, the update after both gradients, all
        # before the driver's read of the step ended
        submitted = seconds(s[DRIVER, 0, "submitted"])[1]
        read_end = seconds(reads[t])[1]
        assert all(seconds(w)[0] >= submitted - SLOP_S for w in workers)
        if t:
            before = max(seconds(step_of[t - 1][SERVERS, k, f"update {t - 1}"])[1] for k in (0, 1))
            assert all(seconds(w)[0] >= before - SLOP_S for w in workers)
            for i, w in enumerate(workers):  # the gap since the update (or submission)
                if gap := s.get((WORKERS, i, "parameters in")):
                    ready = max(before, submitted)
                    assert seconds(gap) == pytest.approx((ready, seconds(w)[0]), abs=1e-6)
                    transfers += 1
        done = max(seconds(w)[1] for w in workers)
        assert all(seconds(u)[0] >= done - SLOP_S for u in servers)
        for k, u in enumerate(servers):  # the gap since the step's last gradient
            if gap := s.get((SERVERS, k, "gradients in")):
                assert seconds(gap) == pytest.approx((done, seconds(u)[0]), abs=1e-6)
                transfers += 1
        assert all(seconds(e)[1] <= read_end + SLOP_S for e in workers + servers)
        if t:  # time/step_s is the time between two steps' reads
            between = read_end - seconds(reads[t - 1])[1]
            assert between == pytest.approx(logged["time/step_s"][t], abs=0.005, rel=0.05)
            compute = max(w["dur"] for w in workers) / 1e6
            update = max(e["dur"] for e in servers) / 1e6
            assert between - compute - update == pytest.approx(logged["time/wait_s"][t], abs=0.005)
    assert transfers > STEPS  # data crossing processes takes time


def test_ctrl_c_writes_the_trace_of_the_steps_run(ray_session, tiny_dataset, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    path = tmp_path / "run.trace.json"
    checkpoints = tmp_path / "ck"
    sets = {
        "data.path": tiny_dataset,
        "train.batch_size": 40,
        "train.num_epochs": 10000,
        "checkpoint.dir": str(checkpoints),
        "checkpoint.every_steps": 2,
        "metrics.logdir": str(tmp_path / "tb"),
    }
    argv = ["train", "--address", address, "--trace", str(path)]
    for key, value in sets.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]

    def interrupt_once_steps_ran():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(checkpoints.glob("ckpt-*.npz")):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # a KeyboardInterrupt in the main thread

    threading.Thread(target=interrupt_once_steps_ran, daemon=True).start()
    assert main(argv) == 130
    document = json.loads(path.read_text())
    assert document["otherData"]["ending"] == "interrupted"
    names = [e["name"] for e in spans(document)]
    assert names.count("checkpoint") >= 1 and "step 0" in names and "update 0" in names
    assert [n for n in names if n.startswith("interrupted")] == [
        "interrupted: settle, checkpoint, stop Ray"
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_a_trace_path_in_a_missing_directory_is_one_line_before_the_run(tmp_path, capsys, dry_run):
    status = main(["train", *dry_run, "--trace", str(tmp_path / "no" / "run.json")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert f"the directory {tmp_path / 'no'} does not exist" in err
    status = main(["train", *dry_run, "--trace", str(tmp_path)])
    assert status == 2 and "is a directory; give a file name" in capsys.readouterr().err


def test_async_steps_have_each_gradient_and_its_server_updates(ray_session, tiny_job):
    job = tiny_job(train={"mode": "async", "max_steps": 8, "servers": 2})
    trace = Trace(job)
    train(job, progress=False, overwrite=True, hooks=trace.hooks())
    names = defaultdict(list)
    for e in spans({"traceEvents": trace.events()}):
        names[e["pid"], e["tid"]].append(e["name"])
    # N = 2 gradients per synchronous-equivalent step, whichever worker computed them
    worker_steps = [n for w in (0, 1) for n in names[WORKERS, w] if n.startswith("step ")]
    assert sorted(worker_steps) == sorted(f"step {t}" for t in range(8) for _ in range(2))
    for server in (0, 1):  # each gradient updates both shards
        assert sorted(names[SERVERS, server]) == sorted(
            f"update {t}" for t in range(8) for _ in (0, 1)
        )
