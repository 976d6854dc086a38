"""Failures during training: killed workers, a killed parameter server, a killed driver,
Ctrl-C. Each run must finish with exactly the parameters of the run without failures."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from distnet.checkpoint import latest_checkpoint, load_checkpoint
from distnet.distributed.driver import train
from distnet.distributed.hooks import Hooks


def killer(steps, pick):
    """on_step callback: at each of `steps` (once each), SIGKILL the process `pick` names."""
    fired = set()

    def on_step(event):
        if event.step in steps and event.step not in fired:
            fired.add(event.step)
            pid = pick(event.group, len(fired))
            os.kill(pid, signal.SIGKILL)

    on_step.fired = fired
    return on_step


@pytest.fixture
def job(tiny_job):
    return tiny_job(
        model={"hidden_dims": [16], "use_batchnorm": True, "dropout": 0.2},
        optim={"update_rule": "adam", "learning_rate": 1e-3},
        train={"num_epochs": 3, "workers": 2, "servers": 2},
        checkpoint={"every_steps": 4},
    )


@pytest.fixture
def clean(ray_session, job):
    return train(job, progress=False, overwrite=True)


def test_killed_workers_are_restarted_and_the_result_is_unchanged(ray_session, job, clean):
    on_step = killer({2, 7, 11}, lambda group, n: group.worker_pids()[n % 2])
    result = train(job, progress=False, overwrite=True, on_step=on_step)
    assert on_step.fired == {2, 7, 11}
    np.testing.assert_array_equal(result.final_params, clean.final_params)
    np.testing.assert_array_equal(result.params, clean.params)
    assert result.loss_history == clean.loss_history


def test_killed_workers_with_several_steps_per_call_leave_the_result_unchanged(
    ray_session, job, clean
):
    """Calls of 3 steps (train.steps_per_call): a kill fails the whole call, the recovery
    goes back to the checkpoint, and the run ends as the one-step-per-call run did."""
    chunked = dataclasses.replace(job, train=dataclasses.replace(job.train, steps_per_call=3))
    on_step = killer({2, 7}, lambda group, n: group.worker_pids()[n % 2])
    result = train(chunked, progress=False, overwrite=True, on_step=on_step)
    assert on_step.fired == {2, 7}
    np.testing.assert_array_equal(result.final_params, clean.final_params)
    np.testing.assert_array_equal(result.params, clean.params)
    assert result.loss_history == clean.loss_history


def test_killed_server_is_restored_from_checkpoint_and_the_result_is_unchanged(
    ray_session, job, clean
):
    on_step = killer({6}, lambda group, n: group.server_pids()[1])
    recovery = []
    result = train(
        job,
        progress=False,
        overwrite=True,
        on_step=on_step,
        hooks=Hooks(
            on_phase=lambda phase, step: (
                phase.startswith("recover") and recovery.append((phase, step))
            )
        ),
    )
    assert on_step.fired == {6}
    # the failure shows at step 7 or 8 (the step queued behind, or step 8's checkpoint); the
    # epoch end's checkpoint (6 steps), written before step 6 was submitted, holds
    assert recovery[0][0] == "recovering" and recovery[0][1] in (7, 8)
    assert recovery[1:] == [("recovered", 6)]
    np.testing.assert_array_equal(result.final_params, clean.final_params)
    np.testing.assert_array_equal(result.bn_state, clean.bn_state)
    assert result.loss_history == clean.loss_history


def write_job(job, path: Path) -> Path:
    lines = []
    top = {k: v for k, v in job.to_dict().items() if not isinstance(v, dict)}
    lines += [f"{k} = {json.dumps(v)}" for k, v in top.items()]
    for section, values in job.to_dict().items():
        if isinstance(values, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def start_driver():
    """Start `distnet train` in a subprocess; kill it at the end whatever happened."""
    procs = []

    def start(job_file, address, *extra):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distnet",
                "train",
                str(job_file),
                "--address",
                address,
                "--json",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def wait_for_checkpoint(directory, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if latest_checkpoint(directory) is not None:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.fixture
def slow_job(tiny_job, job):
    """The same job, long enough (180 steps) that a driver can be stopped half way."""
    return tiny_job(
        model=job.model.__dict__ | {"hidden_dims": [16]},
        optim={"update_rule": "adam", "learning_rate": 1e-3},
        train={"num_epochs": 30, "workers": 2, "servers": 2},
        checkpoint={"every_steps": 4},
    )


def test_killed_driver_resumes_with_the_same_result(ray_session, slow_job, tmp_path, start_driver):
    clean = train(slow_job, progress=False, overwrite=True)
    for path in Path(slow_job.checkpoint.dir).glob("*"):
        path.unlink()
    job_file = write_job(slow_job, tmp_path / "job.toml")
    address = ray_session.get_runtime_context().gcs_address
    proc = start_driver(job_file, address)
    wait_for_checkpoint(slow_job.checkpoint.dir, proc)
    proc.kill()
    proc.communicate()
    interrupted = load_checkpoint(latest_checkpoint(slow_job.checkpoint.dir))
    assert 0 < interrupted.step < clean.steps

    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "distnet",
            "train",
            str(job_file),
            "--address",
            address,
            "--json",
            "--resume",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["steps"] == clean.steps
    final = load_checkpoint(latest_checkpoint(slow_job.checkpoint.dir))
    np.testing.assert_array_equal(final.params, clean.final_params)
    assert final.history["loss_history"] == clean.loss_history


def test_ctrl_c_writes_a_final_checkpoint_and_exits_cleanly(
    ray_session, slow_job, tmp_path, start_driver
):
    job_file = write_job(slow_job, tmp_path / "job.toml")
    address = ray_session.get_runtime_context().gcs_address
    proc = start_driver(job_file, address)
    wait_for_checkpoint(slow_job.checkpoint.dir, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted at step" in err and "--resume" in err
    state = load_checkpoint(latest_checkpoint(slow_job.checkpoint.dir))
    assert state.step >= 4
    assert f"interrupted at step {state.step};" in err
