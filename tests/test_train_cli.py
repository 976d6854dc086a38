"""`distnet train` as a user runs it: the summary, --json, and one-line errors."""

import json
import subprocess
import sys

import pytest


def distnet(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "distnet", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def address(ray_session):
    return ray_session.get_runtime_context().gcs_address


def test_default_job_with_overrides_prints_json_summary(address, tiny_dataset, tmp_path):
    out = distnet("train", "--address", address, "--json", "--workers", "2",
                  "--set", f"data.path={json.dumps(tiny_dataset)}",
                  "--set", "train.num_epochs=1", "--set", "train.batch_size=50",
                  "--set", f"checkpoint.dir={json.dumps(str(tmp_path / 'ck'))}",
                  "--set", f"metrics.logdir={json.dumps(str(tmp_path / 'tb'))}")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["steps"] == 240 // 50 and summary["epochs"] == 1
    assert summary["logdir"] == str(tmp_path / "tb")
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert summary["checkpoint"].startswith(str(tmp_path / "ck"))


@pytest.mark.parametrize("args,message", [
    (["no/such/job.toml"], "no/such/job.toml"),
    (["--set", "train.wrokers=2"], "train.wrokers"),
    (["--set", "train.batch_size=1", "--workers", "2"], "train.batch_size"),
    (["--set", "model.dropout=1.5"], "model.dropout"),
    (["--workers", "0"], "train.workers"),
    (["--set", "data.augment_crop_padding=32"], "data.augment_crop_padding"),
])
def test_bad_job_is_a_one_line_error(args, message):
    out = distnet("train", *args)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("distnet: error:")
    assert message in out.stderr


def test_missing_dataset_without_source_is_a_clear_error(address, tmp_path):
    missing = tmp_path / "nothing.tar.gz"
    out = distnet("train", "--address", address, "--source", str(missing),
                  "--set", f"data.path={json.dumps(str(tmp_path / 'ds'))}")
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("distnet: error:") and str(missing) in out.stderr
