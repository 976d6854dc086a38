"""checkpoint.dir and metrics.logdir URIs are checked when the job is read (no network):
a bad one is one line naming the key, before any dataset, Ray or actor is touched."""

from __future__ import annotations

import subprocess
import sys

import pytest

from distnet.config import JobConfig
from distnet.config.schema import ConfigError
from distnet.remote_path import uri_problem

BAD = [
    ("foo://bucket/run", "unsupported scheme foo://"),
    ("memory:///run", "unsupported scheme memory://"),
    ("s3://", "names no bucket"),
    ("s3:///run", "names no bucket"),
    ("s3://bucket/run?endpoint=127.0.0.1:9000", "Unexpected query parameter in S3 URI"),
    ("gs:///run", "names no bucket"),
    ("hdfs:///run", "names no host"),
    ("file://relative/run", "must be file:///absolute/path"),
]
GOOD = [
    "runs/x",
    "/abs/runs",
    "file:///tmp/runs",
    "s3://bucket/run",  # no region: checked without asking AWS for it
    "s3://key:secret@bucket/run?endpoint_override=127.0.0.1:9000&scheme=http",
    "gs://bucket/run",
    "hdfs://namenode:8020/run",
]


@pytest.mark.parametrize("key", ["metrics.logdir", "checkpoint.dir"])
@pytest.mark.parametrize("uri, message", BAD, ids=[u for u, _ in BAD])
def test_a_bad_location_uri_is_one_line_naming_the_key(key, uri, message):
    section, name = key.split(".")
    with pytest.raises(ConfigError) as err:
        JobConfig.from_dict({section: {name: uri}}, source="jobs/x.toml")
    text = str(err.value)
    assert text.startswith(f"jobs/x.toml: {key} ") and message in text and "\n" not in text


@pytest.mark.parametrize("uri", GOOD)
def test_good_locations_pass_without_the_network(uri):
    assert uri_problem(uri) is None
    assert JobConfig.from_dict({"metrics": {"logdir": uri}}).metrics.logdir == uri


def test_distnet_train_refuses_a_bad_logdir_before_anything_starts(tmp_path):
    checkpoints = tmp_path / "ckpt"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "distnet",
            "train",
            "--set",
            'metrics.logdir="s3:///runs/{name}"',
            "--set",
            f'checkpoint.dir="{checkpoints}"',
            "--set",
            f'data.path="{tmp_path / "no-data"}"',
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("distnet: error: ")
    assert line.endswith('metrics.logdir names no bucket: "s3:///runs/two_layer"')
    assert not checkpoints.exists() and not (tmp_path / "no-data").exists()
