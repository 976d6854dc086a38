"""`distnet data prepare|info|verify` as a user runs them: one-line errors, exit code 2.

The commands run in-process through `distnet.cli.main(argv)`; one test runs the real
`python -m distnet` to show that the process exits the same way."""

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
from datagen import FOLDER, cifar_members, fake_cifar, make_cifar_tarball, md5_of, write_tarball

from distnet.cli import main


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def distnet(capsys):
    def run(*args):
        capsys.readouterr()  # what earlier steps of the test printed
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as exit:  # argparse refusing the arguments
            code = exit.code
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def assert_one_line_error(result, match):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distnet: error: "), result.stderr
    assert match in lines[0]
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    return make_cifar_tarball(tmp_path_factory.mktemp("cli") / "cifar.tar.gz", 40, 30)


@pytest.fixture(scope="module")
def prepared_once(tmp_path_factory, tarball):
    out = tmp_path_factory.mktemp("cli-out") / "cifar10"
    # The real entry point, once: a new process, its exit status and its output.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "distnet",
            "data",
            "prepare",
            "--source",
            str(tarball),
            "--md5",
            md5_of(tarball),
            "--out",
            str(out),
            "--shards",
            "2",
            "--num-val",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return out, result


@pytest.fixture
def prepared(prepared_once):
    out, result = prepared_once
    assert result.returncode == 0, result.stderr
    assert f"{out}: train 190, val 10, test 30 images, 2 shards per split" in result.stdout
    return out


def test_python_m_distnet_exits_2_with_one_line(tarball, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "distnet", "data", "verify", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert_one_line_error(result, "is not a prepared dataset")


def test_info_and_verify(distnet, prepared):
    info = distnet("data", "info", prepared)
    assert info.returncode == 0, info.stderr
    assert "train            190 images in 2 shards" in info.stdout
    assert "airplane, automobile" in info.stdout
    verify = distnet("data", "verify", prepared)
    assert verify.returncode == 0 and "all 6 shards match the manifest" in verify.stdout


def test_wrong_md5_explains_md5_and_no_verify(distnet, tarball, tmp_path):
    result = distnet("data", "prepare", "--source", tarball, "--out", tmp_path / "out")
    assert_one_line_error(result, f"has MD5 {md5_of(tarball)}, not the expected")
    assert "--md5" in result.stderr and "--no-verify" in result.stderr
    assert not (tmp_path / "out").exists()


def test_md5_and_no_verify_are_exclusive(distnet, tarball, tmp_path):
    result = distnet("data", "prepare", "--source", tarball, "--md5", "0" * 32, "--no-verify")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


def test_bad_layout(distnet, tmp_path):
    members = cifar_members(fake_cifar(10, 10))
    del members[f"{FOLDER}/test_batch"]
    bad = write_tarball(tmp_path / "bad.tar.gz", members)
    result = distnet(
        "data",
        "prepare",
        "--source",
        bad,
        "--no-verify",
        "--out",
        tmp_path / "o",
        "--num-val",
        "5",
        "--shards",
        "2",
    )
    assert_one_line_error(result, "missing cifar-10-batches-py/test_batch")


def test_unwritable_output(distnet, tarball, tmp_path):
    (tmp_path / "a-file").write_text("")
    result = distnet(
        "data",
        "prepare",
        "--source",
        tarball,
        "--no-verify",
        "--out",
        tmp_path / "a-file" / "out",
        "--num-val",
        "5",
    )
    assert_one_line_error(result, "a-file")


def test_corrupted_shard_is_named_by_verify(distnet, prepared, tmp_path):
    import shutil

    scratch = shutil.copytree(prepared, tmp_path / "scratch")
    victim = scratch / "val" / "shard-00001-of-00002.arrow"
    victim.write_bytes(victim.read_bytes()[:-1])
    assert_one_line_error(distnet("data", "verify", scratch), f"shard {victim} is corrupt")


def test_missing_shard_and_missing_dataset(distnet, prepared, tmp_path):
    import shutil

    scratch = shutil.copytree(prepared, tmp_path / "scratch")
    (scratch / "test" / "shard-00000-of-00002.arrow").unlink()
    assert_one_line_error(distnet("data", "verify", scratch), "listed in the manifest is missing")
    assert_one_line_error(
        distnet("data", "info", tmp_path / "nothing"), "is not a prepared dataset"
    )


def test_default_output_is_in_distnet_cache(distnet, tarball, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTNET_CACHE", str(tmp_path / "cache"))
    result = distnet(
        "data", "prepare", "--source", tarball, "--no-verify", "--shards", "1", "--num-val", "5"
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cache" / "cifar10" / "manifest.json").is_file()


@pytest.mark.parametrize("mean, shown", [(float("nan"), "found nan"), ("12.5", "found '12.5'")])
def test_verify_refuses_a_manifest_mean_that_is_not_a_pixel_value(
    distnet, prepared, tmp_path, mean, shown
):
    import shutil

    scratch = shutil.copytree(prepared, tmp_path / "scratch")
    path = scratch / "manifest.json"
    raw = json.loads(path.read_text())
    raw["mean"][7] = mean
    path.write_text(json.dumps(raw))
    assert_one_line_error(distnet("data", "verify", scratch), shown)
    assert_one_line_error(distnet("data", "info", scratch), f"{path}: manifest mean")
