"""`distnet train` as a user runs it: the summary, --json, --print-config, --dry-run, the
log directory at the start, and one-line errors. In-process through distnet.cli.main(argv);
one real `python -m distnet` for the entry point."""

import json
import os
import subprocess
import sys
import tomllib

import numpy as np
import pytest

from distnet.checkpoint import TrainState, checkpoint_path, save_checkpoint
from distnet.cli import main
from distnet.config import JobConfig, load_job
from distnet.job_files import find_job
from distnet.models import build_model


@pytest.fixture
def distnet(capsys):
    """`distnet ARGV...` in this process: (exit status, stdout, stderr)."""

    def run(*argv):
        capsys.readouterr()
        status = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def assert_one_line_error(result, *messages):
    status, out, err = result
    assert status == 2 and out == "", err
    assert err.count("\n") == 1 and err.startswith("distnet: error:"), err
    for message in messages:
        assert message in err, err


def on_tiny(tiny_dataset, tmp_path, *more):
    """--set arguments that point the default job at the tiny dataset and tmp_path."""
    settings = [
        f"data.path={json.dumps(tiny_dataset)}",
        "train.batch_size=50",
        f"checkpoint.dir={json.dumps(str(tmp_path / 'ck'))}",
        f"metrics.logdir={json.dumps(str(tmp_path / 'tb'))}",
        *more,
    ]
    return [arg for setting in settings for arg in ("--set", setting)]


def write_checkpoint(job: JobConfig, step: int = 0, **config_changes):
    """A checkpoint of `job` (its job config changed by `config_changes`: section -> dict)."""
    model = build_model(job.model, seed=job.seed)
    config = job.to_dict()
    for section, values in config_changes.items():
        config[section] |= values
    state = TrainState(
        step=step,
        epoch=0,
        params=model.params.vector,
        opt_state={},
        bn_state=model.get_bn_state(),
        best_params=None,
        best_val_acc=-1.0,
        history={},
        config=config,
    )
    return save_checkpoint(job.checkpoint.dir, state, keep=3)


@pytest.fixture
def address(ray_session):
    return ray_session.get_runtime_context().gcs_address


def test_default_job_with_overrides_prints_json_summary(address, distnet, tiny_dataset, tmp_path):
    status, out, err = distnet(
        "train",
        "--address",
        address,
        "--json",
        "--workers",
        "2",
        *on_tiny(tiny_dataset, tmp_path, "train.num_epochs=1"),
    )
    assert status == 0, err
    summary = json.loads(out)
    assert summary["steps"] == 240 // 50 and summary["epochs"] == 1
    logdir = str(tmp_path / "tb")
    assert summary["logdir"] == logdir
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert summary["checkpoint"].startswith(str(tmp_path / "ck"))
    assert f"logs: {logdir}  (tensorboard --logdir {logdir})" in err.splitlines()


def test_the_log_directory_is_printed_when_the_run_starts(ray_session, tiny_job, capsys):
    from distnet import train

    job = tiny_job(train={"max_steps": 2})
    printed = []  # stderr up to each step
    train(job, on_step=lambda event: printed.append(capsys.readouterr().err))
    logdir = job.metrics.logdir
    assert f"logs: {logdir}  (tensorboard --logdir {logdir})" in printed[0].splitlines()


@pytest.mark.parametrize(
    "args,messages",
    [
        (["no/such/job.toml"], ["no/such/job.toml"]),
        (["--set", "train.wrokers=2"], ["train.wrokers", "did you mean train.workers?"]),
        (["--set", "modle.dropout=0.5"], ["did you mean model.dropout?"]),
        (["--set", "model.workers=2"], ["did you mean train.workers?"]),  # another section's
        (["--set", "train.batch_size=1", "--workers", "2"], ["train.batch_size"]),
        (["--set", "model.dropout=1.5"], ["model.dropout"]),
        (["--workers", "0"], ["train.workers"]),
        (["--set", "data.augment_crop_padding=32"], ["data.augment_crop_padding"]),
        (["--resume", "--overwrite"], ["--resume and --overwrite exclude each other"]),
        (["--bogus"], ["unrecognized arguments: --bogus"]),
    ],
)
def test_bad_job_is_a_one_line_error(distnet, args, messages, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default job's checkpoints/ are not this checkout's
    for dry in ([], ["--dry-run"]):
        assert_one_line_error(distnet("train", *args, *dry), *messages)


def test_missing_dataset_without_source_is_a_clear_error(distnet, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nothing.tar.gz"
    for dry in ([], ["--dry-run"]):
        assert_one_line_error(
            distnet(
                "train",
                "--source",
                missing,
                *dry,
                "--set",
                f"data.path={json.dumps(str(tmp_path / 'ds'))}",
            ),
            str(missing),
        )
    assert not (tmp_path / "ds").exists()


# --- --print-config ------------------------------------------------------------------


def test_print_config_is_the_resolved_job_as_toml(distnet, tiny_dataset, tmp_path):
    args = ["large", "--workers", "3", *on_tiny(tiny_dataset, tmp_path, "optim.lr_decay=0.9")]
    status, out, err = distnet("train", *args, "--print-config")
    assert (status, err) == (0, "")
    printed = JobConfig.from_dict(tomllib.loads(out))
    overrides = args[args.index("--set") :][1::2] + ["train.workers=3"]
    assert printed == load_job(find_job("large"), overrides)
    assert (printed.name, printed.train.workers, printed.optim.lr_decay) == ("large", 3, 0.9)
    assert not (tmp_path / "ck").exists() and not (tmp_path / "tb").exists()


# --- --dry-run -----------------------------------------------------------------------


def dry_job(tiny_dataset, tmp_path) -> JobConfig:
    """The job `distnet train --dry-run ...on_tiny...` checks."""
    return load_job(None, on_tiny(tiny_dataset, tmp_path)[1::2])


def test_dry_run_checks_and_plans_and_starts_nothing(distnet, tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a local Ray: one node, the graph
    status, out, err = distnet("train", "--dry-run", *on_tiny(tiny_dataset, tmp_path))
    assert (status, err) == (0, "")
    lines = {line.split()[0]: line for line in out.splitlines()}
    job = dry_job(tiny_dataset, tmp_path)
    params = build_model(job.model).params.vector.size
    assert f"two_layer: TwoLayerNet, {params:,} parameters" in lines["job"]
    assert (
        f"{tiny_dataset}: 240 train / 60 val / 50 test images, shards checked" in lines["dataset"]
    )
    # 2 workers of 120 rows, 25 images each a step: 4 steps an epoch, 10 epochs.
    assert "2 workers (25 + 25 images a step)" in lines["run"]
    assert "transport mesh; 4 steps an epoch, 40 steps" in lines["run"]
    assert lines["checkpoints"].endswith(": a fresh run")
    # the run's memory checks, made and reported (budget.py)
    assert lines["memory"].startswith("memory       at least ")
    assert ", this machine has " in lines["memory"]
    logdir = tmp_path / "tb"
    assert lines["logs"] == f"logs         {logdir}  (tensorboard --logdir {logdir})"
    assert out.splitlines()[-1] == "dry run: everything checked, nothing started"
    assert not (tmp_path / "ck").exists() and not logdir.exists()


def test_dry_run_of_a_dataset_not_prepared_yet_names_its_source(distnet, tmp_path):
    tarball = tmp_path / "cifar.tar.gz"
    tarball.write_bytes(b"checked by the run, not by a dry run")
    status, out, _ = distnet(
        "train",
        "--dry-run",
        "--source",
        tarball,
        "--set",
        f"data.path={json.dumps(str(tmp_path / 'ds'))}",
        "--set",
        f"checkpoint.dir={json.dumps(str(tmp_path / 'ck'))}",
    )
    assert status == 0
    assert f"not prepared yet; the run prepares it from {tarball}" in out
    assert "10 epochs (steps: once the dataset is prepared)" in out
    assert not (tmp_path / "ds").exists()


def test_dry_run_makes_the_runs_memory_checks(distnet, tiny_dataset, tmp_path):
    """A conv job whose activations need more than this machine has (im2col patches of
    two 64-filter convs for 10^7 images a worker) and a batch larger than the training
    set are refused by the dry run as by the run: one line, nothing started."""
    blocks = '[{type = "conv", filters = 64}, {type = "conv", filters = 64}]'
    conv = ["--set", 'model.kind="conv"', "--set", f"model.blocks={blocks}"]
    unprepared = [
        "--source",
        str(tmp_path / "c.tar.gz"),
        "--set",
        f"data.path={json.dumps(str(tmp_path / 'ds'))}",
        "--set",
        f"checkpoint.dir={json.dumps(str(tmp_path / 'ck'))}",
    ]
    (tmp_path / "c.tar.gz").write_bytes(b"not read by a dry run")
    assert_one_line_error(
        distnet("train", "--dry-run", *unprepared, *conv, "--set", "train.batch_size=20000000"),
        "the job needs at least",
    )
    assert_one_line_error(
        distnet("train", "--dry-run", *on_tiny(tiny_dataset, tmp_path, "train.batch_size=500")),
        "train.batch_size = 500 is larger than the training set (240 images)",
    )
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ck").exists()


def test_dry_run_decides_the_checkpoint_directory(distnet, tiny_dataset, tmp_path):
    job = dry_job(tiny_dataset, tmp_path)
    args = ["train", "--dry-run", *on_tiny(tiny_dataset, tmp_path)]
    assert_one_line_error(
        distnet(*args, "--resume"), f"--resume: no checkpoint in {job.checkpoint.dir}"
    )

    first = write_checkpoint(job)
    newest = write_checkpoint(job, step=2)
    assert_one_line_error(
        distnet(*args), "holds checkpoints of an earlier run", "--resume", "--overwrite"
    )
    status, out, _ = distnet(*args, "--resume")
    assert status == 0 and f"continues {newest.name} (step 2, epoch 0)" in out
    status, out, _ = distnet(*args, "--overwrite")
    assert status == 0 and "--overwrite deletes the 2 checkpoints there" in out
    assert first.exists() and newest.exists()  # a dry run deletes nothing

    newest.write_bytes(b"truncated")  # a damaged newest: the run takes the older one
    status, out, _ = distnet(*args, "--resume")
    assert status == 0 and f"continues {first.name} (step 0, epoch 0)" in out
    assert newest.exists()  # and is not moved aside by a dry run


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"model": {"hidden_dims": [7]}}, "another [model]"),
        ({"optim": {"learning_rate": 0.5}}, "another [optim]"),
    ],
)
def test_dry_run_refuses_to_resume_another_jobs_checkpoints(
    distnet, tiny_dataset, tmp_path, changes, message
):
    write_checkpoint(dry_job(tiny_dataset, tmp_path), **changes)
    assert_one_line_error(
        distnet("train", "--dry-run", "--resume", *on_tiny(tiny_dataset, tmp_path)), message
    )


def test_dry_run_refuses_a_checkpoint_beyond_the_run(distnet, tiny_dataset, tmp_path):
    write_checkpoint(dry_job(tiny_dataset, tmp_path), step=41)  # the run has 40 steps
    assert_one_line_error(
        distnet("train", "--dry-run", "--resume", *on_tiny(tiny_dataset, tmp_path)),
        "step 41 is beyond this job's 40 steps",
    )


# --- the entry point -----------------------------------------------------------------


def test_entry_point_decides_the_checkpoint_conflict_before_ray_starts(tiny_dataset, tmp_path):
    """A real `python -m distnet train` at an address where no Ray listens: the conflict is
    the error, not the connection (and it comes in well under Ray's connect timeout)."""
    write_checkpoint(dry_job(tiny_dataset, tmp_path))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "distnet",
            "train",
            "--address",
            "127.0.0.1:1",
            *on_tiny(tiny_dataset, tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("distnet: error:")
    assert "holds checkpoints of an earlier run" in out.stderr
    assert np.array_equal(
        sorted(p.name for p in (tmp_path / "ck").iterdir()),
        [checkpoint_path(tmp_path / "ck", 0).name],
    )


# --- --dashboard ---------------------------------------------------------------------


def test_dashboard_shows_the_runs_actors_on_loopback(tiny_dataset, tmp_path):
    """A real local Ray with its dashboard, in a child (this process has the session's
    Ray): the address it prints serves the run's actors to the token's holder only."""
    import secrets
    import signal
    import threading
    import time
    import urllib.error
    import urllib.request

    token = secrets.token_hex(32)  # this test's own token, nobody's credentials
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_TOKEN": token}
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distnet",
            "train",
            "--dashboard",
            *on_tiny(tiny_dataset, tmp_path, "train.num_epochs=1000"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines = []
    threading.Thread(target=lambda: lines.extend(child.stderr), daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while not any(line.startswith("Ray dashboard: ") for line in lines):
            assert child.poll() is None and time.monotonic() < deadline, lines
            time.sleep(0.2)
        url = next(line for line in lines if line.startswith("Ray dashboard: ")).split()[2]
        assert url.startswith("http://127.0.0.1:"), url

        def actors(headers):
            request = urllib.request.Request(url + "/api/v0/actors", headers=headers)
            with urllib.request.urlopen(request, timeout=10) as response:
                return [
                    (a["class_name"], a["state"])
                    for a in json.load(response)["data"]["result"]["result"]
                ]

        with pytest.raises(urllib.error.HTTPError, match="401"):
            actors({})  # Ray's token guards it
        while actors({"Authorization": f"Bearer {token}"}).count(("GradientWorker", "ALIVE")) < 2:
            assert child.poll() is None and time.monotonic() < deadline, lines
            time.sleep(0.5)
        assert ("ParameterServer", "ALIVE") in actors({"Authorization": f"Bearer {token}"})
    finally:
        child.send_signal(signal.SIGINT)  # Ctrl-C: a checkpoint, then exit 130
        assert child.wait(timeout=60) == 130, lines


def test_dashboard_is_only_for_a_local_ray(distnet, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(
        distnet("train", "--dashboard", "--address", "127.0.0.1:1"),
        "--dashboard starts the dashboard of a local Ray",
    )
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert_one_line_error(distnet("train", "--dashboard"), "a cluster serves its own")
