"""A real multi-node Ray cluster here (raycluster.py: docker-compose.yml's head and two
workers on 127.0.0.2-4, token auth on): jobs go through the Jobs API, their actors land on
distinct nodes, a lost worker node is survived, and docker-compose.yml's TensorBoard serves
scalars over HTTP and draws them in a browser."""

from __future__ import annotations

import json
import math
import re
import time
import urllib.request
from pathlib import Path

import pytest
from ray.job_submission import JobSubmissionClient
from tensorboardX import SummaryWriter

from browser import ARTIFACTS, CHROMIUM, render_page
from raycluster import ray_cluster, tensorboard

WHERE_ACTORS = """
import json, ray
ray.init()

@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
class Where:
    def node(self):
        return ray.get_runtime_context().get_node_id()

actors = [Where.remote() for _ in range(3)]
print("NODES", json.dumps(ray.get([a.node.remote() for a in actors])))
"""

# An actor pinned (softly) to one worker node; the test kills that node; Ray restarts the
# actor on a node that is left and the job carries on.
SURVIVOR = """
import json, sys, time, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init()

@ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=-1)
class Where:
    def node(self):
        return ray.get_runtime_context().get_node_id()

doomed = sys.argv[1]
actor = Where.options(
    scheduling_strategy=NodeAffinitySchedulingStrategy(doomed, soft=True)).remote()
print("FIRST", ray.get(actor.node.remote()), flush=True)
while (now := ray.get(actor.node.remote())) == doomed:
    time.sleep(0.5)
print("THEN", now, flush=True)
"""


@pytest.fixture(scope="module")
def cluster():
    with ray_cluster(workers=2) as started:
        yield started


@pytest.fixture(scope="module")
def client(cluster):
    return JobSubmissionClient(cluster.dashboard_url,
                               headers={"Authorization": f"Bearer {cluster.token}"})


def submit_script(client, tmp_path: Path, script: str, *args: str) -> str:
    (tmp_path / "script.py").write_text(script)
    return client.submit_job(entrypoint=" ".join(["python", "script.py", *args]),
                             runtime_env={"working_dir": str(tmp_path)})


def wait_for(client, job_id: str, predicate, what: str, timeout_s: float = 240) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        logs = client.get_job_logs(job_id)
        if predicate(logs, str(client.get_job_status(job_id).value)):
            return logs
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen; job logs:\n{client.get_job_logs(job_id)}")


def finished(client, job_id: str) -> str:
    logs = wait_for(client, job_id, lambda logs, status: status in (
        "SUCCEEDED", "FAILED", "STOPPED"), "job end")
    assert str(client.get_job_status(job_id).value) == "SUCCEEDED", logs
    return logs


def logged(logs: str, key: str) -> str:
    return re.search(rf"^{key} (.+)$", logs, re.M).group(1)


def test_cluster_has_a_head_and_two_workers_with_distinct_nodes(cluster):
    nodes = cluster.node_ids()
    assert sorted(nodes.values()) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert {n.node_id for n in cluster.nodes} == set(nodes)
    assert len({pid for n in cluster.nodes for pid in n.service.processes()}) == sum(
        len(n.service.processes()) for n in cluster.nodes)  # separate raylets, no sharing


def test_jobs_api_job_spreads_actors_over_all_nodes(cluster, client, tmp_path):
    job_id = submit_script(client, tmp_path, WHERE_ACTORS)
    placed = json.loads(logged(finished(client, job_id), "NODES"))
    assert sorted(placed) == sorted(cluster.node_ids())  # 1 CPU per node: one actor each


def test_a_job_survives_losing_a_worker_node(cluster, client, tmp_path):
    doomed = cluster.workers[0]
    job_id = submit_script(client, tmp_path, SURVIVOR, doomed.node_id)
    wait_for(client, job_id, lambda logs, status: "FIRST" in logs or status == "FAILED",
             "first call")
    doomed.kill()
    logs = finished(client, job_id)
    assert logged(logs, "FIRST") == doomed.node_id
    assert logged(logs, "THEN") in set(cluster.node_ids()) - {doomed.node_id}
    cluster.nodes.remove(doomed)
    cluster.add_worker()  # back to two workers for whatever runs next


# --- TensorBoard: docker-compose.yml's command on logs that tensorboardX wrote -------------

STEPS = 50
CURVES = {
    "loss": lambda step: 2.3 * math.exp(-step / 20),
    "accuracy": lambda step: 1 - math.exp(-step / 15),
    "samples_per_s": lambda step: 1000.0 + 10 * step,
}


@pytest.fixture(scope="module")
def tensorboard_url(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("runs")
    with SummaryWriter(str(logdir / "cluster_run")) as writer:
        for step in range(STEPS):
            for tag, curve in CURVES.items():
                writer.add_scalar(tag, curve(step), step)
    with tensorboard(logdir) as url:
        yield url


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def test_tensorboard_serves_the_scalar_tags_and_values(tensorboard_url):
    tags = get_json(f"{tensorboard_url}/data/plugin/scalars/tags")
    assert set(tags) == {"cluster_run"} and set(tags["cluster_run"]) == set(CURVES)
    for tag, curve in CURVES.items():
        points = get_json(f"{tensorboard_url}/data/plugin/scalars/scalars?run=cluster_run&tag={tag}")
        assert [step for _, step, _ in points] == list(range(STEPS))
        assert [value for _, _, value in points] == pytest.approx(
            [curve(step) for step in range(STEPS)], rel=1e-6)  # stored as float32


# A chart's curve is one SVG path through every step (raw and smoothed: two per card).
CURVE_PATHS = f"""[...document.querySelectorAll('path')]
    .filter(p => (p.getAttribute('d') || '').split('L').length === {STEPS}).length"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_tensorboard_draws_the_curves_in_a_browser(tensorboard_url):
    screenshot = ARTIFACTS / "tensorboard-scalars.png"
    # tagFilter=. puts every card in one expanded grid (TensorBoard folds later groups).
    dom = render_page(f"{tensorboard_url}/?darkMode=false&tagFilter=.#timeseries", screenshot,
                      ready=f"{CURVE_PATHS} >= {2 * len(CURVES)}")
    assert screenshot.stat().st_size > 10_000
    for tag in CURVES:
        assert f">{tag}<" in dom.replace(" ", "")  # a card per tag
    curves = [d for d in re.findall(r'<path[^>]* d="(M[^"]+)"', dom) if d.count("L") == STEPS - 1]
    assert len(curves) == 2 * len(CURVES)
