"""distnet where PyTorch is installed (issue 17): it never loads torch, and a job submitted
to a three-node cluster whose environment has torch trains to the end.

The environment is built by torchenv.py (a venv over this one plus torch==2.13.0, the bench
extra's CPU build), never this one. Loading libtorch is what killed the issue's job driver:
oneMKL inside libtorch_cpu.so aborts ("Intel oneMKL FATAL ERROR: Cannot load
.../libtorch_cpu.so") when the process's working directory has been deleted, which is what
happened when nodes on one host shared a Ray temp dir and one node unpacked the job's
working_dir over the driver's (raycluster.py gives each node its own, as cluster/README.md
says to). tensorboardX imports torch whenever it can; distnet.event_log keeps it out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from datagen import make_prepared_dataset
from raycluster import ray_cluster
from torchenv import TORCH, torch_env

pytestmark = pytest.mark.slow

# Runs in the torch environment: a real local run (its own Ray, whose actors run that
# environment's python), looking into the driver and every actor at the first step.
PROBE = textwrap.dedent("""
    import importlib.util, json, os, sys
    from distnet.config import JobConfig
    from distnet.distributed.driver import train

    def torch_loaded(pid):
        with open(f"/proc/{pid}/maps") as maps:
            return "libtorch" in maps.read()

    seen = {}

    def look(event):
        if not seen:
            pids = event.group.worker_pids() + event.group.server_pids()
            seen.update({str(pid): torch_loaded(pid) for pid in pids})
            seen["driver"] = "torch" in sys.modules or torch_loaded(os.getpid())

    job = JobConfig.from_dict(json.loads(sys.argv[1]))
    train(job, progress=False, on_step=look)
    print(json.dumps({"importable": importlib.util.find_spec("torch") is not None,
                      "seen": seen}))
""")


@pytest.fixture(scope="module")
def env():
    return torch_env()


def test_torch_is_importable_there_and_not_here(env):
    out = subprocess.run(
        [env.python, "-c", "import torch; print(torch.__version__)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert out.stdout.startswith(TORCH)
    assert (
        subprocess.run(
            [sys.executable, "-c", "import torch"], capture_output=True, check=False
        ).returncode
        != 0
    )  # the test environment stays without


def test_a_run_where_torch_is_installed_never_loads_it(env, tiny_dataset, tmp_path):
    raw = {
        "data": {"path": tiny_dataset},
        "model": {"kind": "fc", "hidden_dims": [16], "use_batchnorm": True},
        "optim": {"update_rule": "adam"},
        "train": {"num_epochs": 1, "batch_size": 40, "workers": 2, "servers": 2},
        "checkpoint": {"dir": str(tmp_path / "ckpt")},
        "metrics": {"logdir": str(tmp_path / "runs")},
    }  # TensorBoard events written too
    out = subprocess.run(
        [env.python, "-c", PROBE, json.dumps(raw)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
        env=env.environ(
            {
                "PATH": "/usr/bin:/bin",
                "HOME": str(tmp_path),
                # the checkout under test (conftest.py)
                "PYTHONPATH": os.environ["PYTHONPATH"],
            }
        ),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.splitlines()[-1])
    assert found["importable"]
    assert found["seen"] == {key: False for key in found["seen"]} and len(found["seen"]) == 5
    assert list((tmp_path / "runs").glob("events.out.tfevents.*"))


JOB = """\
name = "torch_installed"
[model]
kind = "fc"
hidden_dims = [100, 100]
[optim]
update_rule = "adam"
[train]
workers = 3
num_epochs = 1
batch_size = 200
"""


def test_submit_to_three_nodes_with_torch_installed_trains(env, tmp_path):
    with ray_cluster(workers=2, python_bin=env.bin) as cluster:
        shared = cluster.shared
        make_prepared_dataset(
            shared / "data", shards=3, n_train_per_batch=60, n_test=50, num_val=60
        )
        (tmp_path / "job.toml").write_text(JOB)  # the directory holds only the job file
        submitted = subprocess.run(
            [
                sys.executable,
                "-m",
                "distnet",
                "submit",
                "job.toml",
                "--address",
                cluster.dashboard_url,
                "--set",
                f"data.path={json.dumps(str(shared / 'data' / 'cifar10'))}",
                "--set",
                f"checkpoint.dir={json.dumps(str(shared / 'ckpt'))}",
                "--set",
                f"metrics.logdir={json.dumps(str(shared / 'runs'))}",
            ],
            cwd=tmp_path,
            env=cluster.client_env(),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert submitted.returncode == 0, f"{submitted.stderr}\n{submitted.stdout}"
        assert "test acc" in submitted.stdout
        # ... in an environment where the job's own python imports torch
        probe = subprocess.run(
            [
                "ray",
                "job",
                "submit",
                "--address",
                cluster.dashboard_url,
                "--",
                "python",
                "-c",
                "import sys, torch; print('torch', torch.__version__, sys.prefix)",
            ],
            env=cluster.client_env() | {"RAY_AUTH_MODE": "token"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert f"torch {TORCH}" in probe.stdout and str(env.root) in probe.stdout, (
            probe.stdout + probe.stderr
        )
        assert len(cluster.node_ids()) == 3
