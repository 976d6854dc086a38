"""Bad data is one line naming the file, before training: check_dataset (what the driver
runs before any worker starts), the workers' checksums when they open their shards, manifests
that are wrong in any key or value, and ensure_dataset never rebuilding over them."""

import json
import shutil

import pytest
from datagen import make_cifar_tarball, make_prepared_dataset, md5_of

from distnet.data.check import check_dataset
from distnet.data.errors import DataError
from distnet.data.prepare import ensure_dataset
from distnet.data.reader import load_manifest, open_split, verify_dataset
from distnet.errors import DistnetError

SHARD = "shard-00001-of-00004.arrow"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """240 train / 20 val / 50 test images in 4 shards per split."""
    return make_prepared_dataset(tmp_path_factory.mktemp("check"), shards=4)


@pytest.fixture
def scratch(pristine, tmp_path):
    return shutil.copytree(pristine, tmp_path / "cifar10")


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    assert isinstance(info.value, DistnetError)  # what the CLI prints as one line
    message = str(info.value)
    assert "\n" not in message, message
    return message


def flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_manifest(root, edit):
    path = root / "manifest.json"
    raw = json.loads(path.read_text())
    edited = edit(raw)
    path.write_text(edited if isinstance(edited, str) else json.dumps(edited))


def test_an_intact_dataset_passes(pristine):
    assert check_dataset(pristine, num_workers=3) == load_manifest(pristine)


def test_flipped_bytes_in_a_train_shard_are_named_when_a_worker_opens_it(scratch):
    victim = scratch / "train" / SHARD
    flip_byte(victim, victim.stat().st_size // 2)  # pixel data: metadata still reads
    # What stays of check_dataset where hashing the train split is not cheap (s3://...):
    check_dataset(str(scratch), num_workers=2, checksums=False)
    open_split(str(scratch), "train", 1, 2, verify=True)  # a worker not reading it is fine
    message = one_line_error(open_split, str(scratch), "train", 0, 2, verify=True)
    assert message.startswith(f"shard {victim} is corrupt")


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_flipped_bytes_on_local_disk_are_found_up_front(scratch, split):
    victim = scratch / split / SHARD
    flip_byte(victim, victim.stat().st_size // 2)
    message = one_line_error(check_dataset, str(scratch))
    assert message.startswith(f"shard {victim} is corrupt")
    check_dataset(str(scratch), checksums=False)  # data.verify = false: the user's choice


def test_a_wrong_test_sha256_in_the_manifest_is_found_up_front(scratch):
    def wrong(raw):
        raw["splits"]["test"]["shards"][1]["sha256"] = "0" * 64
        return raw

    edit_manifest(scratch, wrong)
    message = one_line_error(check_dataset, str(scratch))
    assert message.startswith(f"shard {scratch / 'test' / SHARD} is corrupt")


def test_a_wrong_train_sha256_is_named_by_the_worker_that_opens_it(scratch):
    def wrong(raw):
        raw["splits"]["train"]["shards"][0]["sha256"] = "f" * 64
        return raw

    edit_manifest(scratch, wrong)
    message = one_line_error(open_split, str(scratch), "train", verify=True)
    assert message.startswith(f"shard {scratch / 'train' / 'shard-00000-of-00004.arrow'}")


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_a_wrong_row_count_in_the_manifest_is_found_up_front(scratch, split):
    def shift(raw):  # the split's total still adds up
        raw["splits"][split]["shards"][0]["rows"] += 1
        raw["splits"][split]["shards"][1]["rows"] -= 1
        return raw

    edit_manifest(scratch, shift)
    message = one_line_error(check_dataset, str(scratch), checksums=False)
    assert message.startswith(f"shard {scratch / split / 'shard-00000-of-00004.arrow'} holds")
    assert "the manifest says" in message


def test_a_truncated_or_missing_train_shard_is_found_up_front(scratch):
    victim = scratch / "train" / SHARD
    victim.write_bytes(victim.read_bytes()[:-10])
    message = one_line_error(check_dataset, str(scratch), checksums=False)
    assert message.startswith(f"shard {victim} has ") and "the manifest says" in message
    assert one_line_error(check_dataset, str(scratch)).startswith(f"shard {victim} is corrupt")
    victim.unlink()
    for checksums in (True, False):
        assert "is missing" in one_line_error(check_dataset, str(scratch), checksums=checksums)


def test_a_damaged_footer_is_found_up_front(scratch):
    victim = scratch / "train" / SHARD
    flip_byte(victim, victim.stat().st_size - 12)  # inside the IPC file footer
    message = one_line_error(check_dataset, str(scratch))
    assert message.startswith(f"shard {victim} ")


def test_more_workers_than_val_images(pristine):
    message = one_line_error(check_dataset, pristine, num_workers=21)
    assert "split val" in message and "20 images" in message and "21 workers" in message


# --- manifests: every wrong key or value is named ------------------------------------------


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda raw: "{not json", "invalid manifest: not JSON"),
        (lambda raw: "[1, 2]", "must be a JSON object, got list"),
        (
            lambda raw: {k: v for k, v in raw.items() if k != "source_md5"},
            "lacks the key(s) source_md5",
        ),
        (lambda raw: {**raw, "colour": 1}, "unknown key(s) colour"),
        (
            lambda raw: {**raw, "splits": {**raw["splits"], "val": {"rows": 20}}},
            "split 'val' lacks the key(s) shards",
        ),
        (lambda raw: {**raw, "mean": [float("nan")] + raw["mean"][1:]}, "found nan"),
        (lambda raw: {**raw, "mean": ["12.5"] + raw["mean"][1:]}, "found '12.5'"),
        (lambda raw: {**raw, "mean": [True] + raw["mean"][1:]}, "found True"),
        (lambda raw: {**raw, "mean": [1e9] + raw["mean"][1:]}, "in [0, 255]"),
        (lambda raw: {**raw, "mean": "0"}, "mean has str values"),
        (lambda raw: {**raw, "num_val": 21}, "num_val 21 differs"),
        (lambda raw: {**raw, "label_names": "cat"}, "label_names must be a list"),
        (lambda raw: {**raw, "source_md5": "x"}, "source_md5 must be 32"),
        (lambda raw: {**raw, "image_shape": "3x32x32"}, "image_shape must be a list"),
    ],
)
def test_a_bad_manifest_is_named_by_verify_and_check(scratch, edit, match):
    edit_manifest(scratch, edit)
    for call in (load_manifest, verify_dataset, check_dataset):
        message = one_line_error(call, str(scratch))
        assert message.startswith(str(scratch / "manifest.json")) and match in message, message


def test_bad_shard_entries_are_named(scratch):
    def edit(raw, **values):
        raw["splits"]["test"]["shards"][0].update(values)
        return raw

    edit_manifest(scratch, lambda raw: edit(raw, rows="12"))
    assert "rows must be an integer >= 0, got '12'" in one_line_error(load_manifest, str(scratch))
    edit_manifest(scratch, lambda raw: edit(raw, rows=12, sha256="Z" * 64))
    assert "sha256 must be 64 lowercase hex" in one_line_error(load_manifest, str(scratch))


# --- ensure_dataset: no silent rebuild, no download over a user's dataset -----------------


@pytest.mark.parametrize("text, match", [("{oops", "not JSON"), (None, "lacks the key(s) splits")])
def test_ensure_dataset_never_replaces_a_broken_manifest(scratch, tmp_path, text, match):
    edit_manifest(scratch, lambda raw: text or {k: v for k, v in raw.items() if k != "splits"})
    before = {p: p.read_bytes() for p in scratch.rglob("*") if p.is_file()}
    # A source that would fail differently if ensure_dataset tried to rebuild from it.
    message = one_line_error(
        ensure_dataset, str(scratch), source=str(tmp_path / "absent.tgz"), progress=False
    )
    assert match in message and "absent" not in message
    assert {p: p.read_bytes() for p in scratch.rglob("*") if p.is_file()} == before


def test_ensure_dataset_rebuilds_damage_only_from_the_same_tarball(tmp_path):
    tarball = make_cifar_tarball(tmp_path / "cifar.tar.gz", 20, 10)
    out = tmp_path / "cifar10"
    kwargs = {
        "source": str(tarball),
        "md5": md5_of(tarball),
        "shards": 2,
        "num_val": 10,
        "progress": False,
    }
    ensure_dataset(str(out), **kwargs)
    victim = out / "test" / "shard-00000-of-00002.arrow"
    victim.unlink()
    other = make_cifar_tarball(tmp_path / "other.tar.gz", 20, 10, seed=1)
    message = one_line_error(
        ensure_dataset,
        str(out),
        source=str(other),
        md5=md5_of(other),
        shards=2,
        num_val=10,
        progress=False,
    )
    assert f"shard {victim} is missing; not rebuilt" in message and md5_of(tarball) in message
    assert not victim.exists()
    ensure_dataset(str(out), **kwargs)  # its own tarball: rebuilt as it was
    assert victim.exists() and verify_dataset(str(out))
