"""distnet on a real multi-node Ray cluster here (raycluster.py: docker-compose.yml's head
and two workers on 127.0.0.2-4, token auth on): `distnet submit` trains with the gradient
workers on different nodes, logs and TensorBoard files land where cluster/README.md says,
losing a worker node mid-run changes nothing in the result, and docker-compose.yml's
TensorBoard serves the scalars over HTTP and draws them in a browser; every listener of the
cluster is on loopback (listening.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from browser import ARTIFACTS, CHROMIUM, polylines, render_page
from datagen import make_prepared_dataset
from listening import exposed, listeners
from loopback import same_namespace
from ray.job_submission import JobSubmissionClient
from raycluster import _descendants, ray_cluster, tensorboard

from distnet.checkpoint import latest_checkpoint, load_checkpoint

# Long enough (600 steps) to lose a node in the middle of it.
JOB = """\
name = "multinode"
seed = 5
[model]
kind = "fc"
hidden_dims = [16]
weight_scale = 1e-2
[optim]
update_rule = "sgd_momentum"
learning_rate = 1e-3
[train]
num_epochs = 100
batch_size = 40
workers = 2
num_train_samples = 100
[checkpoint]
every_steps = 10
[metrics]
log_every_steps = 1
"""
# What TensorBoard shows of it: 6 cards (4 per step, 2 per epoch), raw and smoothed curves.
RUN_TAGS = {
    "train/loss",
    "train/learning_rate",
    "train/grad_norm",
    "train/samples_per_s",
    "accuracy/train",
    "accuracy/val",
}


@pytest.fixture(scope="module")
def cluster():
    with ray_cluster(workers=2) as started:
        yield started


@pytest.fixture(scope="module")
def client(cluster):
    return JobSubmissionClient(
        cluster.dashboard_url, headers={"Authorization": f"Bearer {cluster.token}"}
    )


@pytest.fixture(scope="module")
def workdir(cluster, tmp_path_factory):
    """The directory `distnet submit` uploads; the dataset goes on the "shared volume"."""
    make_prepared_dataset(
        cluster.shared / "data", shards=4, n_train_per_batch=60, n_test=50, num_val=60
    )
    root = tmp_path_factory.mktemp("project")
    (root / "jobs").mkdir()
    (root / "jobs" / "multinode.toml").write_text(JOB)
    return root


def submit(cluster, workdir: Path, run: str) -> subprocess.Popen:
    """`distnet submit` of the job, its outputs in the shared dir under `run`/."""
    shared = cluster.shared
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distnet",
            "submit",
            "jobs/multinode.toml",
            "--address",
            cluster.dashboard_url,
            "--set",
            f"data.path={shared}/data/cifar10",
            "--set",
            f"metrics.logdir={shared}/{run}/runs/{{name}}",
            "--set",
            f"checkpoint.dir={shared}/{run}/checkpoints/{{name}}",
        ],
        cwd=workdir,
        env=cluster.client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> tuple[str, str]:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, f"{err}\n{out}"
    return out, err


def job_id_of(stderr: str) -> str:
    return stderr.split("distnet: submitted ", 1)[1].split()[0]


def gradient_workers(cluster, client, submission_id: str) -> list[dict]:
    ray_job_id = client.get_job_info(submission_id).job_id
    query = urllib.parse.urlencode({"detail": "true", "limit": 1000})
    return [
        a
        for a in cluster.api(f"/api/v0/actors?{query}")
        if a["class_name"] == "GradientWorker" and a["job_id"] == ray_job_id
    ]


def final_state(cluster, run: str):
    return load_checkpoint(latest_checkpoint(cluster.shared / run / "checkpoints" / "multinode"))


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def clean_run(cluster, client, workdir):
    out, err = finish(submit(cluster, workdir, "clean"))
    return job_id_of(err), out


def test_cluster_has_a_head_and_two_workers_with_distinct_nodes(cluster):
    nodes = cluster.node_ids()
    assert sorted(nodes.values()) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert {n.node_id for n in cluster.nodes} == set(nodes)
    pids = [pid for n in cluster.nodes for pid in n.service.processes()]
    assert len(pids) == len(set(pids))  # separate raylets, nothing shared


def test_the_cluster_listens_on_loopback_only(cluster):
    """Every listener of every node of the test cluster is private (listening.py)."""
    assert len(cluster.node_ids()) == 3  # the clients here reach it, with the token
    pids = [pid for node in cluster.nodes for pid in node.service.processes()]
    assert not any(same_namespace(pid) for pid in pids)
    commands = {lst.command for pid in pids for lst in listeners(pid)}
    assert {"gcs_server", "raylet"} <= commands, commands
    assert exposed(pids) == []
    # ... and what the tests reach it through: a forwarder on 127.0.0.1 here.
    forwarders = [
        pid for proc in cluster.netns.forwarders for pid in [proc.pid, *_descendants(proc.pid)]
    ]
    assert [str(lst.ip) for pid in forwarders for lst in listeners(pid)] == ["127.0.0.1"]
    assert exposed(forwarders) == []
    # Token authentication is still on behind the forwarder.
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(cluster.dashboard_url + "/api/v0/nodes", timeout=30)
    assert refused.value.code in (401, 403)


def test_a_submitted_job_trains_with_workers_on_different_nodes(cluster, client, clean_run):
    job_id, logs = clean_run
    assert str(client.get_job_status(job_id).value) == "SUCCEEDED"
    assert "test acc" in logs and logs == client.get_job_logs(job_id)
    workers = gradient_workers(cluster, client, job_id)
    assert len(workers) == 2
    nodes = {w["node_id"] for w in workers}
    assert len(nodes) == 2 and nodes <= set(cluster.node_ids())
    state = final_state(cluster, "clean")
    assert state.epoch == 100 and np.isfinite(state.params).all()


def test_tensorboard_serves_what_the_run_wrote_where_the_docs_say(cluster, clean_run):
    runs = cluster.shared / "clean" / "runs"
    assert list((runs / "multinode").glob("events.out.tfevents.*"))
    with tensorboard(runs) as url:
        assert RUN_TAGS <= set(get_json(f"{url}/data/plugin/scalars/tags")["multinode"])


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_tensorboard_draws_the_runs_curves_in_a_browser(cluster, clean_run):
    screenshot = ARTIFACTS / "tensorboard-multinode-run.png"
    with tensorboard(cluster.shared / "clean" / "runs") as url:
        # tagFilter puts the cards in one expanded grid (TensorBoard folds later groups).
        dom = render_page(
            f"{url}/?darkMode=false&tagFilter=train/|accuracy/#timeseries",
            screenshot,
            height=2000,
            ready=f"{polylines(10)} >= 12",
        )
    assert screenshot.stat().st_size > 10_000
    for tag in RUN_TAGS:
        assert f'title="{tag}"' in dom  # a card for each


def test_losing_a_worker_node_mid_run_leaves_the_result_unchanged(
    cluster, client, workdir, clean_run
):
    process = submit(cluster, workdir, "node_lost")
    line = ""
    while not line.startswith("distnet: submitted"):
        line = process.stderr.readline()
        assert line, f"distnet submit ended early: {process.communicate()}"
    job_id = job_id_of(line)
    # Wait until both gradient workers run and training has begun, then lose a worker
    # node that hosts one of them.
    deadline = time.monotonic() + 300
    while True:
        workers = [w for w in gradient_workers(cluster, client, job_id) if w["state"] == "ALIVE"]
        if len(workers) == 2 and list((cluster.shared / "node_lost").glob("runs/**/events.*")):
            break
        assert time.monotonic() < deadline and process.poll() is None, client.get_job_logs(job_id)
        time.sleep(0.2)
    worker_nodes = {n.node_id: n for n in cluster.workers}
    victim = next(worker_nodes[w["node_id"]] for w in workers if w["node_id"] in worker_nodes)
    victim.kill()
    finish(process)
    assert str(client.get_job_status(job_id).value) == "SUCCEEDED"
    assert victim.node_id not in cluster.node_ids()
    restarted = [w for w in gradient_workers(cluster, client, job_id) if int(w["num_restarts"])]
    assert restarted  # the lost node's worker came back on a node that was left
    clean, lost = final_state(cluster, "clean"), final_state(cluster, "node_lost")
    assert (lost.step, lost.epoch) == (clean.step, clean.epoch)
    np.testing.assert_array_equal(lost.params, clean.params)
    cluster.nodes.remove(victim)
    cluster.add_worker()  # back to two workers for whatever runs next


# --- docker-compose.yml's TensorBoard on the values the run logged --------------------------


def scalars(url: str, tag: str) -> tuple[list[int], list[float]]:
    """The steps and values TensorBoard serves for one tag of the run."""
    query = urllib.parse.urlencode({"run": "multinode", "tag": tag})
    points = get_json(f"{url}/data/plugin/scalars/scalars?{query}")
    return [step for _, step, _ in points], [value for _, _, value in points]


def test_tensorboard_serves_the_values_the_run_logged(cluster, clean_run):
    # The run's final checkpoint holds every step's loss and every epoch's accuracies.
    state = final_state(cluster, "clean")
    history, per_epoch = state.history, state.step // state.epoch
    with tensorboard(cluster.shared / "clean" / "runs") as url:
        steps, losses = scalars(url, "train/loss")
        assert steps == list(range(state.step))  # log_every_steps = 1
        assert losses == pytest.approx(history["loss_history"], rel=1e-6)  # stored as float32
        for split in ("train", "val"):
            steps, accuracies = scalars(url, f"accuracy/{split}")
            assert steps == list(range(per_epoch, state.step + 1, per_epoch))
            assert accuracies == pytest.approx(history[f"{split}_acc_history"], rel=1e-6)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_tensorboard_draws_each_epoch_the_run_logged(cluster, clean_run):
    epochs = len(final_state(cluster, "clean").history["val_acc_history"])
    screenshot = ARTIFACTS / "tensorboard-multinode-accuracy.png"
    with tensorboard(cluster.shared / "clean" / "runs") as url:
        dom = render_page(
            f"{url}/?darkMode=false&tagFilter=accuracy/val#timeseries",
            screenshot,
            ready=f"{polylines(epochs)} >= 2",
        )
    assert 'title="accuracy/val"' in dom
    # The card draws the raw and the smoothed curve, each one SVG path through every epoch.
    curves = [d for d in re.findall(r'<path[^>]* d="(M[^"]+)"', dom) if d.count("L") == epochs - 1]
    assert len(curves) == 2
