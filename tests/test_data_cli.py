"""`distnet data prepare|info|verify` as a user runs them: one-line errors, exit code 2."""

import subprocess
import sys

import pytest

from datagen import FOLDER, cifar_members, fake_cifar, make_cifar_tarball, md5_of, write_tarball


def distnet(*args, env=None):
    return subprocess.run([sys.executable, "-m", "distnet", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


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
def prepared(tmp_path_factory, tarball):
    out = tmp_path_factory.mktemp("cli-out") / "cifar10"
    result = distnet("data", "prepare", "--source", tarball, "--md5", md5_of(tarball),
                     "--out", out, "--shards", "2", "--num-val", "10")
    assert result.returncode == 0, result.stderr
    assert f"{out}: train 190, val 10, test 30 images, 2 shards per split" in result.stdout
    return out


def test_info_and_verify(prepared):
    info = distnet("data", "info", prepared)
    assert info.returncode == 0, info.stderr
    assert "train            190 images in 2 shards" in info.stdout
    assert "airplane, automobile" in info.stdout
    verify = distnet("data", "verify", prepared)
    assert verify.returncode == 0 and "all 6 shards match the manifest" in verify.stdout


def test_wrong_md5_explains_md5_and_no_verify(tarball, tmp_path):
    result = distnet("data", "prepare", "--source", tarball, "--out", tmp_path / "out")
    assert_one_line_error(result, f"has MD5 {md5_of(tarball)}, not the expected")
    assert "--md5" in result.stderr and "--no-verify" in result.stderr
    assert not (tmp_path / "out").exists()


def test_md5_and_no_verify_are_exclusive(tarball, tmp_path):
    result = distnet("data", "prepare", "--source", tarball, "--md5", "0" * 32, "--no-verify")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


def test_bad_layout(tmp_path):
    members = cifar_members(fake_cifar(10, 10))
    del members[f"{FOLDER}/test_batch"]
    bad = write_tarball(tmp_path / "bad.tar.gz", members)
    result = distnet("data", "prepare", "--source", bad, "--no-verify", "--out", tmp_path / "o",
                     "--num-val", "5", "--shards", "2")
    assert_one_line_error(result, "missing cifar-10-batches-py/test_batch")


def test_unwritable_output(tarball, tmp_path):
    (tmp_path / "a-file").write_text("")
    result = distnet("data", "prepare", "--source", tarball, "--no-verify",
                     "--out", tmp_path / "a-file" / "out", "--num-val", "5")
    assert_one_line_error(result, "a-file")


def test_corrupted_shard_is_named_by_verify(prepared, tmp_path):
    import shutil

    scratch = shutil.copytree(prepared, tmp_path / "scratch")
    victim = scratch / "val" / "shard-00001-of-00002.arrow"
    victim.write_bytes(victim.read_bytes()[:-1])
    assert_one_line_error(distnet("data", "verify", scratch), f"shard {victim} is corrupt")


def test_missing_shard_and_missing_dataset(prepared, tmp_path):
    import shutil

    scratch = shutil.copytree(prepared, tmp_path / "scratch")
    (scratch / "test" / "shard-00000-of-00002.arrow").unlink()
    assert_one_line_error(distnet("data", "verify", scratch), "listed in the manifest is missing")
    assert_one_line_error(distnet("data", "info", tmp_path / "nothing"),
                          "is not a prepared dataset")


def test_default_output_is_in_distnet_cache(tarball, tmp_path):
    import os

    env = {**os.environ, "DISTNET_CACHE": str(tmp_path / "cache")}
    result = distnet("data", "prepare", "--source", tarball, "--no-verify", "--shards", "1",
                     "--num-val", "5", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cache" / "cifar10" / "manifest.json").is_file()
