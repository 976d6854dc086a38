"""`distnet submit` against a real Ray head with token authentication (docker-compose.yml's
head command, see raycluster.py): validation first, the token from each place Ray reads it,
clear one-line errors for a missing or wrong token, following the logs to the job's end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray.job_submission import JobSubmissionClient
from raycluster import free_port, ray_cluster

from distnet.cli import main
from distnet.distributed.submit import (
    SubmitError,
    Token,
    Upload,
    dashboard_address,
    entrypoint,
    failure_reason,
    find_token,
)
from distnet.errors import DistnetError

# Valid here; on the cluster it fails at once (no dataset, no tarball to prepare it from).
JOB = """\
name = "submit_test"
[data]
path = "/nonexistent/distnet-submit-test/cifar10"
source = "/nonexistent/distnet-submit-test/cifar-10-python.tar.gz"
"""


@pytest.fixture(scope="module")
def cluster():
    with ray_cluster(workers=0) as head_only:  # the Jobs API lives on the head
        yield head_only


@pytest.fixture(scope="module")
def client(cluster):
    return JobSubmissionClient(
        cluster.dashboard_url, headers={"Authorization": f"Bearer {cluster.token}"}
    )


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "submit_test.toml").write_text(JOB)
    return tmp_path


# A project directory's outputs and datasets stay home; code in packages named alike goes.
# So do secrets (by their names) and what a .gitignore in any directory lists.
LEFT_BEHIND = [
    "data/cifar10/train-0.arrow",
    "runs/old/events.out",
    "checkpoints/c.npz",
    ".git/HEAD",
    "lib/__pycache__/m.pyc",
    "lib/scratch.log",
]
SECRETS = [
    ".env",
    "deploy/prod.env",
    "deploy/server.pem",
    "keys/id_rsa",
    "keys/id_rsa.pub",
    "keys/api.key",
    "auth_token",
    ".ssh/config",
    ".aws/credentials",
    "lib/gh.token",
]
UPLOADED = [
    "jobs/submit_test.toml",
    "lib/data/reader.py",
    "lib/runs.py",
    "lib/tokenizer.py",
    "lib/.gitignore",
    "lib/keys.py",
    "environment.yml",
]


def make_project(workdir: Path) -> None:
    for name in LEFT_BEHIND + SECRETS + UPLOADED:
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        if not (workdir / name).exists():  # the job file stays
            (workdir / name).write_text("x")
    (workdir / "lib" / ".gitignore").write_text("*.log\n")


def submit(workdir: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distnet", "submit", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distnet: error: "), result.stderr
    return lines[0]


def wait_until_done(client: JobSubmissionClient, job_id: str) -> str:
    client.stop_job(job_id)  # keep the head free for the next test
    while (status := str(client.get_job_status(job_id).value)) not in (
        "SUCCEEDED",
        "FAILED",
        "STOPPED",
    ):
        time.sleep(0.5)
    return status


def test_submit_with_the_token_runs_distnet_train_on_the_uploaded_dir(cluster, client, workdir):
    make_project(workdir)
    result = submit(
        workdir,
        cluster.client_env(token=None),
        "jobs/submit_test.toml",
        "--address",
        cluster.dashboard_url,
        "--token",
        cluster.token,
        "--set",
        "train.workers=2",
        "--set",
        "optim.learning_rate=5e-3",
        "--no-wait",
    )
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert job_id.startswith("raysubmit_") and job_id in result.stderr
    info = client.get_job_info(job_id)
    assert info.entrypoint == (
        "distnet train jobs/submit_test.toml --set train.workers=2 --set optim.learning_rate=5e-3"
    )
    assert info.runtime_env["working_dir"].startswith("gcs://")  # uploaded, not a local path
    # Ray's own CLI reaches the same job with the environment cluster/README.md documents.
    documented = cluster.client_env() | {"RAY_AUTH_MODE": "token"}
    status = subprocess.run(
        ["ray", "job", "status", job_id, "--address", cluster.dashboard_url],
        env=documented,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert status.returncode == 0 and job_id in status.stdout + status.stderr
    wait_until_done(client, job_id)
    # What the head unpacked for the job (raycluster.py: the head's Ray temp dir is n0/).
    [unpacked] = (cluster.root / "n0").glob("session_latest/runtime_resources/working_dir_files/*/")
    assert all((unpacked / name).is_file() for name in UPLOADED)
    assert not any((unpacked / name).exists() for name in LEFT_BEHIND + SECRETS)
    # ... and said so: exactly what the head unpacked, counted and sized.
    on_head = [p for p in unpacked.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in on_head)
    assert (
        f"distnet: uploaded {len(on_head)} files ({size} B) from {workdir}; left out as "
        f"secrets: " in result.stderr
    ), result.stderr


def test_rays_own_submit_works_as_the_readme_says(cluster, client, workdir):
    documented = cluster.client_env() | {"RAY_AUTH_MODE": "token"}
    result = subprocess.run(
        [
            "ray",
            "job",
            "submit",
            "--no-wait",
            "--address",
            cluster.dashboard_url,
            "--working-dir",
            ".",
            "--",
            "distnet",
            "train",
            "jobs/submit_test.toml",
        ],
        cwd=workdir,
        env=documented,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    job_id = re.search(r"raysubmit_\w+", result.stdout + result.stderr).group(0)
    assert client.get_job_info(job_id).entrypoint == "distnet train jobs/submit_test.toml"
    wait_until_done(client, job_id)


@pytest.mark.parametrize("source", ["RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"])
def test_submit_reads_the_token_from_the_environment(cluster, client, workdir, source):
    env = cluster.client_env(token=None)
    if source == "RAY_AUTH_TOKEN":
        env["RAY_AUTH_TOKEN"] = cluster.token
    else:
        (workdir / "token").write_text(cluster.token + "\n")
        env["RAY_AUTH_TOKEN_PATH"] = str(workdir / "token")
    result = submit(
        workdir, env, "jobs/submit_test.toml", "--address", cluster.dashboard_url, "--no-wait"
    )
    assert result.returncode == 0, result.stderr
    wait_until_done(client, result.stdout.strip())


def test_submit_without_a_token_says_how_to_get_one(cluster, client, workdir):
    before = len(client.list_jobs())
    result = submit(
        workdir,
        cluster.client_env(token=None),
        "jobs/submit_test.toml",
        "--address",
        cluster.dashboard_url,
        "--no-wait",
    )
    line = one_error_line(result)
    assert "requires an authentication token" in line and "ray get-auth-token" in line
    assert len(client.list_jobs()) == before


def test_submit_with_a_wrong_token_names_where_it_came_from(cluster, client, workdir):
    before = len(client.list_jobs())
    result = submit(
        workdir,
        cluster.client_env(token="not-the-token"),
        "jobs/submit_test.toml",
        "--address",
        cluster.dashboard_url,
        "--no-wait",
    )
    line = one_error_line(result)
    assert "rejected the authentication token from RAY_AUTH_TOKEN" in line
    assert "ray get-auth-token" in line and "not-the-token" not in line
    assert len(client.list_jobs()) == before


def test_submit_follows_the_logs_and_exits_1_when_the_job_fails(cluster, client, workdir):
    result = submit(
        workdir, cluster.client_env(), "jobs/submit_test.toml", "--address", cluster.dashboard_url
    )
    assert result.returncode == 1 and "submitted " in result.stderr, result.stderr
    job_id = result.stderr.split("submitted ", 1)[1].split()[0]
    assert f"distnet: job {job_id} failed" in result.stderr
    assert str(client.get_job_status(job_id).value) == "FAILED"
    assert result.stdout == client.get_job_logs(job_id)  # the job's whole log, followed
    [error] = [line for line in result.stdout.splitlines() if line.startswith("distnet: error: ")]
    # the trainer's own one-line error, said again as the reason
    assert (
        f"distnet: job {job_id} failed: {error.removeprefix('distnet: error: ')} (" in result.stderr
    )


# A library that kills the process while it loads, as oneMKL in libtorch_cpu.so did in
# issue 17, and one that fails to load: shadowing tomllib from the uploaded directory (Ray
# puts it first on the job's PYTHONPATH), so `distnet train` meets them at once, and Ray's
# own job supervisor (which shares that PYTHONPATH) does not.
ABORTING = (
    "import os, sys\nsys.stderr.write('FATAL ERROR: Cannot load libfake.so.\\n')\n"
    "sys.stderr.flush()\nos.abort()\n"
)
FAILING = "raise ImportError('libfake.so: cannot open shared object file')\n"


@pytest.mark.parametrize(
    "library, reason",
    [
        (
            ABORTING,
            "the driver died (Aborted) while importing tomllib: FATAL ERROR: Cannot load "
            "libfake.so.",
        ),
        (
            FAILING,
            "ImportError: libfake.so: cannot open shared object file (while importing tomllib)",
        ),
    ],
)
def test_a_driver_that_dies_importing_is_one_line_naming_the_import(
    cluster, workdir, library, reason
):
    (workdir / "tomllib").mkdir()
    (workdir / "tomllib" / "__init__.py").write_text(library)
    elsewhere = workdir / "jobs"  # not where `python -m distnet` would import it from
    result = submit(
        elsewhere,
        cluster.client_env(),
        "submit_test.toml",
        "--working-dir",
        str(workdir),
        "--address",
        cluster.dashboard_url,
    )
    assert result.returncode == 1, result.stderr
    job_id = result.stderr.split("submitted ", 1)[1].split()[0]
    assert f"distnet: job {job_id} failed: {reason} (ray job logs {job_id} " in result.stderr, (
        result.stdout
    )


def test_failure_reasons_from_real_crash_logs(tmp_path):
    (tmp_path / "fakelib").mkdir()
    (tmp_path / "app.py").write_text("import json\nimport fakelib\n")

    def log_of(library: str) -> str:
        (tmp_path / "fakelib" / "__init__.py").write_text(library)
        run = subprocess.run(
            [sys.executable, "-X", "faulthandler", "app.py"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode != 0
        return run.stdout + run.stderr

    assert failure_reason(log_of(ABORTING)) == (
        "the driver died (Aborted) while importing fakelib: FATAL ERROR: Cannot load libfake.so."
    )
    assert failure_reason(log_of(FAILING)) == (
        "ImportError: libfake.so: cannot open shared object file (while importing fakelib)"
    )
    assert failure_reason(log_of("import no_such_module\n")) == (
        "ModuleNotFoundError: No module named 'no_such_module' (while importing no_such_module)"
    )
    assert failure_reason("step 3\ndistnet: error: shard x is corrupt\n") == "shard x is corrupt"
    assert failure_reason("all went well\n") is None


# --- errors found before any upload: no cluster needed --------------------------------------


def test_a_bad_job_file_fails_before_contacting_the_cluster(workdir):
    (workdir / "jobs" / "typo.toml").write_text(JOB + "[train]\nnum_epoch = 3\n")
    unreachable = f"http://127.0.0.1:{free_port()}"
    line = one_error_line(
        submit(
            workdir,
            {**_base_env(), "HOME": str(workdir)},
            "jobs/typo.toml",
            "--address",
            unreachable,
        )
    )
    assert "train.num_epoch" in line and "jobs/typo.toml" in line


def test_an_unreachable_cluster_is_one_clear_line(workdir):
    unreachable = f"http://127.0.0.1:{free_port()}"
    line = one_error_line(
        submit(
            workdir,
            {**_base_env(), "HOME": str(workdir)},
            "jobs/submit_test.toml",
            "--address",
            unreachable,
        )
    )
    assert f"cannot reach a Ray dashboard at {unreachable}" in line


@pytest.mark.parametrize(
    "address, message",
    [
        ("ray://127.0.0.1:10001", "must be the dashboard's HTTP address"),
        ("", "submit needs --address"),
    ],
)
def test_the_address_must_be_the_dashboard_url(workdir, address, message):
    env = {k: v for k, v in _base_env().items() if k != "RAY_API_SERVER_ADDRESS"}
    assert message in one_error_line(
        submit(workdir, env, "jobs/submit_test.toml", "--address", address)
    )


def test_submit_falls_back_to_ray_address_and_takes_host_port_and_pip(cluster, client, workdir):
    host_port = cluster.dashboard_url.removeprefix("http://")
    env = cluster.client_env() | {"RAY_ADDRESS": host_port}  # as `ray job submit` reads it
    result = submit(
        workdir,
        env,
        "jobs/submit_test.toml",
        "--pip",
        "packaging>=20",
        "--pip",
        "tqdm",
        "--no-wait",
    )
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert f"submitted {job_id} to http://{host_port}" in result.stderr
    pip = client.get_job_info(job_id).runtime_env["pip"]
    assert (pip["packages"] if isinstance(pip, dict) else pip) == ["packaging>=20", "tqdm"]
    wait_until_done(client, job_id)


def test_the_address_comes_from_the_flag_then_the_environment(monkeypatch):
    for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SubmitError, match="submit needs --address"):
        dashboard_address(None)
    monkeypatch.setenv("RAY_ADDRESS", "head:8265")
    assert dashboard_address(None) == "http://head:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "https://api.example:443/")
    assert dashboard_address("") == "https://api.example:443"
    assert dashboard_address("10.0.0.1:8265") == "http://10.0.0.1:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "auto")  # a Ray address, not a dashboard
    with pytest.raises(SubmitError, match=r"^RAY_API_SERVER_ADDRESS=auto must be the dash"):
        dashboard_address(None)


@pytest.mark.parametrize(
    "address",
    ["ray://head:10001", "auto", "http://", "head:port", "http://head:8265/jobs", "gs://b"],
)
def test_a_bad_address_is_one_line_before_anything_is_read(address, capsys):
    status = main(["submit", "no/such/job.toml", "--address", address])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert f"--address {address!r} must be the dashboard's HTTP address" in err


@pytest.mark.parametrize("package", ["", "torch===", "-r requirements.txt", "a b"])
def test_a_bad_pip_requirement_is_one_line_before_the_upload(workdir, package, capsys):
    unreachable = f"http://127.0.0.1:{free_port()}"
    job = str(workdir / "jobs" / "submit_test.toml")
    status = main(["submit", job, "--address", unreachable, "--pip", "tqdm", "--pip", package])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert f"--pip {package!r} is not a pip requirement" in err


def test_ray_address_without_a_scheme_means_http(workdir):
    port = free_port()
    env = {**_base_env(), "HOME": str(workdir), "RAY_ADDRESS": f"127.0.0.1:{port}"}
    line = one_error_line(submit(workdir, env, "jobs/submit_test.toml"))
    assert f"cannot reach a Ray dashboard at http://127.0.0.1:{port}" in line


def test_the_job_file_must_be_inside_the_uploaded_directory(workdir, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    line = one_error_line(
        submit(
            elsewhere,
            _base_env(),
            str(workdir / "jobs/submit_test.toml"),
            "--address",
            "http://127.0.0.1:1",
        )
    )
    assert "outside the uploaded working directory" in line


def test_token_lookup_follows_rays_order(tmp_path, monkeypatch):
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert find_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-default-file\n")
    assert find_token().value == "from-default-file"
    (tmp_path / "file").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "file"))
    assert (find_token().value, find_token().source) == (
        "from-path",
        f"RAY_AUTH_TOKEN_PATH={tmp_path}/file",
    )
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert find_token().value == "from-env"
    assert (find_token("explicit").value, find_token("explicit").source) == ("explicit", "--token")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(DistnetError, match="RAY_AUTH_TOKEN_PATH"):
        find_token()


def test_the_upload_leaves_secrets_and_ignored_files_out_and_names_the_secrets(
    workdir, monkeypatch
):
    make_project(workdir)
    (workdir / "my_token").write_text("t")  # named by RAY_AUTH_TOKEN_PATH: left out too
    upload = Upload.of(workdir, Token("t", "RAY_AUTH_TOKEN_PATH", workdir / "my_token"))
    assert [p.as_posix() for p in upload.files] == sorted(UPLOADED)
    assert [p.as_posix() for p in upload.secrets] == sorted(SECRETS + ["my_token"])
    size = sum((workdir / name).stat().st_size for name in UPLOADED)
    assert str(upload) == (
        f"{len(UPLOADED)} files ({size} B) from {workdir}; left out "
        f"as secrets: .aws/credentials, .env, .ssh/config, auth_token, "
        f"deploy/prod.env and 6 more"
    )
    # As Ray's own upload: RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1 uploads what .gitignore lists.
    monkeypatch.setenv("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "1")
    assert Path("lib/scratch.log") in Upload.of(workdir).files


def test_entrypoint_quotes_overrides_for_the_shell():
    assert entrypoint("jobs/a b.toml", ["data.path=/x y", "name=it's"]) == (
        "distnet train 'jobs/a b.toml' --set 'data.path=/x y' --set 'name=it'\"'\"'s'"
    )


def _base_env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "DISTNET_CACHE"
    }
