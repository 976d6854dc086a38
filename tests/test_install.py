"""What `pip install distnet-ray` ships and how `distnet train NAME` finds a ready job.

Building the wheel and installing it in a fresh venv needs the package index, so that is
.ci/wheel_check.sh (run by .ci/run); these tests check the declarations it relies on.
"""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import distnet
from distnet.config import ConfigError, load_job
from distnet.job_files import describe, find_job, job_to_toml, ready_jobs

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
JOB_FILES = sorted((REPO / "jobs").glob("*.toml"))


def distnet_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "distnet", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )


def test_distribution_name_is_not_the_taken_one_and_metadata_is_spdx():
    assert PROJECT["name"] == "distnet-ray"  # `distnet` on PyPI is an unrelated project
    assert PROJECT["scripts"] == {"distnet": "distnet.cli:main"}
    assert PROJECT["license"] == "MIT"
    assert "MIT License" in (REPO / "LICENSE").read_text()
    assert "version" in PROJECT["dynamic"]  # one version: distnet.__version__


def test_ray_allows_patch_releases_and_tensorboard_is_an_extra():
    ray = next(Requirement(d) for d in PROJECT["dependencies"] if d.startswith("ray"))
    assert "default" in ray.extras
    assert ray.specifier.contains("2.60.0") and ray.specifier.contains("2.60.7")
    assert not ray.specifier.contains("2.61.0")
    assert [Requirement(d).name for d in PROJECT["optional-dependencies"]["tensorboard"]] == [
        "tensorboard"
    ]


def test_every_job_file_is_package_data_without_a_copy():
    link = REPO / "distnet" / "jobs"
    assert link.is_symlink() and link.resolve() == (REPO / "jobs").resolve()
    assert [p.name for p in ready_jobs().values()] == [p.name for p in JOB_FILES]
    assert {p.resolve() for p in ready_jobs().values()} == {p.resolve() for p in JOB_FILES}


@pytest.mark.parametrize("name", ["large", "large.toml"])
def test_a_ready_job_is_found_by_name(name):
    assert find_job(name).resolve() == (REPO / "jobs" / "large.toml").resolve()
    assert load_job(find_job(name)).name == "large"


def test_an_existing_file_wins_over_a_ready_job_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("large").write_text('name = "mine"\n')
    assert find_job("large") == Path("large")
    assert find_job("sub/large.toml") == Path("sub/large.toml")  # a path: load_job reports


def test_an_unknown_name_is_an_error_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"larg: .*did you mean large\?.*two_layer"):
        find_job("larg")


def test_every_ready_job_has_a_description():
    for path in JOB_FILES:
        text = describe(path)
        assert text and len(text) < 90 and not text.endswith((".", ":")), (path, text)


def test_printed_toml_reads_back_as_the_same_job():
    for path in JOB_FILES:
        job = load_job(path)
        printed = job_to_toml(job)
        assert load_job_text(printed) == job, path


def load_job_text(text):
    from distnet.config import JobConfig

    return JobConfig.from_dict(tomllib.loads(text))


def test_cli_lists_jobs_and_prints_its_version(tmp_path):
    listed = distnet_cli("train", "--list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [p.stem for p in JOB_FILES]
    version = distnet_cli("--version", cwd=tmp_path)
    assert (version.returncode, version.stdout) == (0, f"distnet {distnet.__version__}\n")


def test_cli_unknown_job_name_is_one_line(tmp_path):
    out = distnet_cli("train", "two_layr", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "did you mean two_layer?" in out.stderr


def test_the_image_build_context_carries_the_license():
    # `pip install .` in cluster/Dockerfile builds a wheel whose metadata names LICENSE.
    import dockerfile

    copied = [
        path
        for c in dockerfile.parse_file(str(REPO / "cluster" / "Dockerfile"))
        if c.cmd == "COPY"
        for path in c.value[:-1]
    ]
    assert "LICENSE" in copied
    assert "!LICENSE" in (REPO / "cluster" / "Dockerfile.dockerignore").read_text().split()
