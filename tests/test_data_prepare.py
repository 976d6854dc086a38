"""prepare_dataset: tarball -> Arrow shards + manifest, and every bad tarball or location."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from datagen import (
    FOLDER,
    LABEL_NAMES,
    batch_pickle,
    cifar_members,
    fake_cifar,
    md5_of,
    py2_pickle,
    write_tarball,
)

from distnet.data.errors import DataError
from distnet.data.prepare import OFFICIAL_MD5, ensure_dataset, prepare_dataset
from distnet.data.reader import load_manifest, open_split

N_PER_BATCH, N_TEST, NUM_VAL = 60, 50, 20


@pytest.fixture(scope="module")
def data():
    return fake_cifar(N_PER_BATCH, N_TEST, seed=0)


@pytest.fixture(scope="module")
def tarball(tmp_path_factory, data):
    return write_tarball(tmp_path_factory.mktemp("src") / "cifar.tar.gz", cifar_members(data))


def prepare(tarball, out, **kwargs):
    if "md5" not in kwargs:
        kwargs["md5"] = md5_of(tarball)
    kwargs.setdefault("shards", 3)
    return prepare_dataset(
        str(out),
        source=str(tarball),
        num_val=kwargs.pop("num_val", NUM_VAL),
        progress=False,
        **kwargs,
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tarball):
    out = tmp_path_factory.mktemp("prepared") / "cifar10"
    prepare(tarball, out)
    return out


def expected_splits(data):
    n_train = 5 * N_PER_BATCH - NUM_VAL
    return {
        "train": (data.train_images[:n_train], data.train_labels[:n_train]),
        "val": (data.train_images[n_train:], data.train_labels[n_train:]),
        "test": (data.test_images, data.test_labels),
    }


def shard_files(out):
    return sorted(Path(out).glob("*/shard-*.arrow"))


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_round_trip_is_bit_exact(prepared, data, split):
    images, labels = expected_splits(data)[split]
    reader = open_split(str(prepared), split)
    got_images, got_labels = reader.take(np.arange(reader.num_rows))
    assert reader.num_rows == len(labels)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.dtype == np.uint8 and got_labels.dtype == np.int64


def test_split_sizes_shards_and_metadata(prepared):
    manifest = load_manifest(str(prepared))
    assert {name: split.rows for name, split in manifest.splits.items()} == {
        "train": 5 * N_PER_BATCH - NUM_VAL,
        "val": NUM_VAL,
        "test": N_TEST,
    }
    for split in manifest.splits.values():
        rows = [shard.rows for shard in split.shards]
        assert len(rows) == 3 and max(rows) - min(rows) <= 1
    assert manifest.label_names == LABEL_NAMES
    assert manifest.image_shape == (3, 32, 32)
    assert len(shard_files(prepared)) == 9


def test_mean_is_the_train_splits_per_pixel_mean(prepared, data):
    train_images = expected_splits(data)["train"][0]
    expected = train_images.astype(np.float64).mean(axis=0).astype(np.float32)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(open_split(str(prepared), split).mean, expected)


def test_shards_are_plain_arrow_files(prepared, data):
    """Other Arrow tools read the columns as they are: 3072 uint8 per image, int labels."""
    first = sorted(Path(prepared, "train").glob("shard-*.arrow"))[0]
    table = pa.ipc.open_file(pa.memory_map(str(first))).read_all()
    assert table.column_names == ["image", "label"]
    assert table.schema.field("image").type == pa.list_(pa.uint8(), 3072)
    assert table.column("image")[0].as_py() == data.train_images[0].tolist()
    assert table.column("label").to_pylist() == data.train_labels[: table.num_rows].tolist()


def test_manifest_is_plain_json_without_pickle(prepared):
    raw = json.loads(Path(prepared, "manifest.json").read_text())
    assert raw["format"] == "distnet-cifar10-arrow"
    assert len(raw["mean"]) == 3072 and raw["columns"]["label"] == "int64"


def test_rerun_is_idempotent_and_rewrites_nothing(tmp_path, tarball):
    out = tmp_path / "cifar10"
    first = prepare(tarball, out)
    files = shard_files(out) + [out / "manifest.json"]
    before = {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in files}
    second = prepare(tarball, out)
    assert second == first
    assert {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in files} == before


def test_rerun_with_other_shard_count_rewrites_and_removes_stale_shards(tmp_path, tarball):
    out = tmp_path / "cifar10"
    prepare(tarball, out, shards=3)
    prepare(tarball, out, shards=2)
    assert sorted(p.relative_to(out).as_posix() for p in shard_files(out)) == [
        f"{split}/shard-0000{k}-of-00002.arrow"
        for split in ("test", "train", "val")
        for k in range(2)
    ]
    assert load_manifest(str(out)).shards_per_split == 2


def test_rerun_repairs_a_damaged_shard(tmp_path, tarball, data):
    out = tmp_path / "cifar10"
    prepare(tarball, out)
    victim = shard_files(out)[0]
    victim.write_bytes(victim.read_bytes()[:100])
    prepare(tarball, out)
    np.testing.assert_array_equal(open_split(str(out), "test").labels, data.test_labels)


def test_file_uri_output_goes_through_the_pyarrow_filesystem(tmp_path, tarball, data):
    uri = (tmp_path / "via-uri").as_uri()
    assert uri.startswith("file://")
    prepare(tarball, uri)
    assert (tmp_path / "via-uri" / "manifest.json").is_file()
    reader = open_split(uri, "val", worker_index=1, num_workers=2)
    np.testing.assert_array_equal(reader.labels, expected_splits(data)["val"][1][NUM_VAL // 2 :])


def test_ensure_dataset_returns_existing_without_the_source(prepared, tmp_path, tarball):
    assert ensure_dataset(str(prepared), source=str(tmp_path / "absent.tar.gz")) == load_manifest(
        str(prepared)
    )
    out = tmp_path / "fresh"
    manifest = ensure_dataset(
        str(out),
        source=str(tarball),
        md5=md5_of(tarball),
        shards=2,
        num_val=NUM_VAL,
        progress=False,
    )
    assert manifest.splits["val"].rows == NUM_VAL and (out / "manifest.json").is_file()


# --- bad input: one DataError each, and nothing written --------------------------------------


def assert_refused(tmp_path, source, match, **kwargs):
    out = tmp_path / "out"
    with pytest.raises(DataError, match=match):
        prepare(source, out, **kwargs)
    assert not shard_files(out) and not (out / "manifest.json").exists()


def test_wrong_md5_is_refused_and_explains_the_options(tmp_path, tarball):
    with pytest.raises(DataError, match=f"not the expected {OFFICIAL_MD5}.*--md5 .*--no-verify"):
        prepare(tarball, tmp_path / "out", md5=None)
    assert_refused(tmp_path, tarball, "not the expected 0123", md5="0123" + "0" * 28)
    prepare(tarball, tmp_path / "unverified", md5=None, verify=False)


def test_missing_source(tmp_path):
    assert_refused(tmp_path, tmp_path / "nope.tar.gz", "does not exist", md5=OFFICIAL_MD5)


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "not-a-tarball"])
def test_truncated_or_corrupted_tarball(tmp_path, tarball, damage):
    content = tarball.read_bytes()
    bad = tmp_path / "bad.tar.gz"
    if damage == "truncated":
        bad.write_bytes(content[: len(content) // 2])
    elif damage == "corrupted":
        middle = len(content) // 2
        bad.write_bytes(
            content[:middle]
            + bytes(b ^ 0xFF for b in content[middle : middle + 64])
            + content[middle + 64 :]
        )
    else:
        bad.write_bytes(b"hello, not a tarball\n" * 100)
    assert_refused(tmp_path, bad, "truncated or corrupt tarball")


def broken_tarball(tmp_path, data, edit):
    members = cifar_members(data)
    edit(members)
    return write_tarball(tmp_path / "broken.tar.gz", members)


def test_missing_batch(tmp_path, data):
    bad = broken_tarball(tmp_path, data, lambda m: m.pop(f"{FOLDER}/data_batch_3"))
    assert_refused(tmp_path, bad, "missing cifar-10-batches-py/data_batch_3")


@pytest.mark.parametrize(
    "images, labels, match",
    [
        (np.zeros((10, 1024), np.uint8), [0] * 10, r"data must be uint8 of shape \(n, 3072\)"),
        (np.zeros((10, 3072), np.float32), [0] * 10, r"data must be uint8 of shape \(n, 3072\)"),
        (np.zeros((10, 3072), np.uint8), [0] * 9, "9 labels for 10 images"),
        (np.zeros((10, 3072), np.uint8), [0] * 9 + [10], r"labels must lie in 0\.\.9"),
        (np.zeros((10, 3072), np.uint8), [0] * 9 + [-1], r"labels must lie in 0\.\.9"),
    ],
)
def test_batch_of_another_layout(tmp_path, data, images, labels, match):
    def edit(members):
        members[f"{FOLDER}/test_batch"] = batch_pickle(images, labels)

    assert_refused(tmp_path, broken_tarball(tmp_path, data, edit), f"test_batch: {match}")


def test_batch_that_is_not_a_dict(tmp_path, data):
    def edit(members):
        members[f"{FOLDER}/data_batch_1"] = py2_pickle([1, 2, 3])

    assert_refused(tmp_path, broken_tarball(tmp_path, data, edit), "expected a pickled dict")


@pytest.mark.parametrize(
    "num_val, shards, match",
    [
        (300, 3, "leaves no training images"),
        (2, 3, "3 shards is more than the 2 images of split val"),
        (0, 3, "must be at least 1"),
    ],
)
def test_impossible_split_settings(tmp_path, tarball, num_val, shards, match):
    assert_refused(tmp_path, tarball, match, num_val=num_val, shards=shards)


def test_unwritable_output(tmp_path, tarball):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(DataError, match="a-file"):
        prepare(tarball, blocker / "cifar10")
    assert blocker.read_text() == "not a directory"
