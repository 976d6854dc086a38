"""open_split / assign_rows / verify_dataset: worker shares, minibatches, damaged datasets."""

import json
import shutil
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from datagen import fake_cifar, make_prepared_dataset
from hypothesis import given
from hypothesis import strategies as st

from distnet.data.errors import DataError
from distnet.data.manifest import ShardInfo
from distnet.data.reader import assign_rows, load_manifest, open_split, verify_dataset
from distnet.data.shards import open_shard

SHARDS, NUM_VAL = 4, 20


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_prepared_dataset(
        tmp_path_factory.mktemp("reader"), shards=SHARDS, num_val=NUM_VAL, seed=3
    )


@pytest.fixture(scope="module")
def train_truth():
    data = fake_cifar(seed=3)
    return data.train_images[:-NUM_VAL], data.train_labels[:-NUM_VAL]


@pytest.fixture
def scratch(dataset, tmp_path):
    """A private scratch of the dataset that a test may damage."""
    return Path(shutil.copytree(dataset, tmp_path / "scratch"))


@given(num_rows=st.integers(1, 10_000), num_workers=st.integers(1, 300))
def test_assign_rows_partitions_the_split_in_balanced_contiguous_ranges(num_rows, num_workers):
    if num_workers > num_rows:
        with pytest.raises(DataError, match=f"more workers \\({num_workers}\\)"):
            assign_rows(num_rows, 0, num_workers)
        return
    ranges = [assign_rows(num_rows, i, num_workers) for i in range(num_workers)]
    assert ranges[0][0] == 0 and ranges[-1][1] == num_rows
    assert all(stop == next_start for (_, stop), (next_start, _) in pairwise(ranges))
    sizes = [stop - start for start, stop in ranges]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_assign_rows_rejects_a_bad_worker_index():
    with pytest.raises(DataError, match="worker index 3 is not in 0..2"):
        assign_rows(100, 3, 3)


# 3 workers on 4 shards (not a divisor), 7 workers (more workers than shards), and 1.
@pytest.mark.parametrize("num_workers", [1, 3, 7])
def test_workers_together_read_the_whole_split_exactly_once(dataset, train_truth, num_workers):
    images, labels = train_truth
    parts = [open_split(dataset, "train", i, num_workers) for i in range(num_workers)]
    assert sum(part.num_rows for part in parts) == len(labels)
    assert max(p.num_rows for p in parts) - min(p.num_rows for p in parts) <= 1
    np.testing.assert_array_equal(np.concatenate([p.labels for p in parts]), labels)
    got = np.concatenate([p.take(np.arange(p.num_rows))[0] for p in parts])
    np.testing.assert_array_equal(got, images)


def test_take_gathers_random_rows_across_shard_boundaries(dataset, train_truth):
    images, labels = train_truth
    part = open_split(dataset, "train", 0, 2)  # 140 rows over two 70-row shards
    rows = np.random.default_rng(0).integers(0, part.num_rows, 200)
    got_images, got_labels = part.take(rows)
    np.testing.assert_array_equal(got_images, images[part.start + rows])
    np.testing.assert_array_equal(got_labels, labels[part.start + rows])


def test_take_rejects_rows_outside_the_workers_range(dataset):
    part = open_split(dataset, "train", 1, 2)
    for bad in ([part.num_rows], [-1]):
        with pytest.raises(IndexError):
            part.take(bad)


def test_batch_is_float32_images_minus_mean(dataset, train_truth):
    images, labels = train_truth
    part = open_split(dataset, "train", 1, 3)
    rows = np.array([5, 0, 5, part.num_rows - 1])
    X, y = part.batch(rows)
    expected = images[part.start + rows].astype(np.float32) - part.mean
    assert X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(X, expected)
    np.testing.assert_array_equal(y, labels[part.start + rows])
    buffer = np.empty((4, 3072), np.float32)
    X2, _ = part.batch(rows, out=buffer)
    assert X2 is buffer
    np.testing.assert_array_equal(buffer, expected)
    np.testing.assert_array_equal(part.normalize(part.take(rows)[0]), expected)


@pytest.mark.parametrize("num_workers", [1, 2])  # one shard per worker, or rows over two
def test_nchw_layout_is_the_rows_as_rgb_planes(dataset, train_truth, num_workers):
    images, _ = train_truth
    flat = open_split(dataset, "train", num_workers - 1, num_workers)
    nchw = open_split(dataset, "train", num_workers - 1, num_workers, layout="nchw")
    assert (flat.layout, flat.image_shape, nchw.image_shape) == ("flat", (3072,), (3, 32, 32))
    rows = np.array([3, 0, nchw.num_rows - 1, 3])
    pixels, labels = nchw.take(rows)
    assert pixels.shape == (4, 3, 32, 32) and pixels.dtype == np.uint8
    assert pixels.flags.c_contiguous and pixels.base is not None  # a view of the gathered rows
    source = images[nchw.start + rows]
    for c in range(3):  # channel c is bytes [1024 c, 1024 (c + 1)) of the stored row
        np.testing.assert_array_equal(
            pixels[:, c], source[:, 1024 * c : 1024 * (c + 1)].reshape(4, 32, 32)
        )
    X, y = nchw.batch(rows)
    X_flat, y_flat = flat.batch(rows)
    assert X.shape == (4, 3, 32, 32) and X.dtype == np.float32 and nchw.mean.shape == (3, 32, 32)
    np.testing.assert_array_equal(X.reshape(4, -1), X_flat)
    np.testing.assert_array_equal(y, y_flat)
    np.testing.assert_array_equal(labels, y_flat)
    buffer = np.empty((4, 3, 32, 32), np.float32)
    assert nchw.batch(rows, out=buffer)[0] is buffer
    # normalize takes either shape, whatever the layout (the augmenter returns the one given)
    np.testing.assert_array_equal(flat.normalize(pixels), X)
    np.testing.assert_array_equal(nchw.normalize(pixels.reshape(4, -1)), X_flat)
    with pytest.raises(DataError, match=r"images must be \(B, 3072\) or \(B, 3, 32, 32\)"):
        nchw.normalize(pixels.reshape(4, 96, 32))


def test_unknown_layout_fails_before_reading(tmp_path):
    with pytest.raises(DataError, match="image layout must be one of flat, nchw, got 'nhwc'"):
        open_split(str(tmp_path / "missing"), "train", layout="nhwc")


def test_local_shards_are_zero_copy_memory_maps(dataset):
    info = load_manifest(dataset).splits["test"].shards[0]
    shard = open_shard(pa.fs.LocalFileSystem(), dataset, info, verify=True)
    assert shard.images.shape == (info.rows, 3072) and shard.images.dtype == np.uint8
    assert not shard.images.flags.owndata and not shard.images.flags.writeable


def test_only_the_overlapping_shards_are_opened(scratch):
    # Delete the last train shard: worker 0 of 2 never touches it, worker 1 does.
    (scratch / "train" / f"shard-00003-of-0000{SHARDS}.arrow").unlink()
    assert open_split(str(scratch), "train", 0, 2).num_rows == 140
    with pytest.raises(
        DataError, match="shard-00003-of-00004.arrow listed in the manifest is missing"
    ):
        open_split(str(scratch), "train", 1, 2)


def test_more_workers_than_images(dataset):
    with pytest.raises(DataError, match=r"more workers \(21\) than images \(20\) in split val"):
        open_split(dataset, "val", 0, 21)


def test_unknown_split(dataset):
    with pytest.raises(DataError, match="no split 'valid'"):
        open_split(dataset, "valid")


@pytest.mark.parametrize("damage", ["flip-byte", "truncate", "append"])
def test_damaged_shard_is_named(scratch, damage):
    victim = scratch / "test" / "shard-00001-of-00004.arrow"
    content = bytearray(victim.read_bytes())
    if damage == "flip-byte":
        content[len(content) // 2] ^= 0x01
    elif damage == "truncate":
        content = content[: len(content) - 200]
    else:
        content += b"\0" * 8
    victim.write_bytes(bytes(content))
    with pytest.raises(DataError, match=f"{victim}.* corrupt or truncated"):
        open_split(str(scratch), "test")
    with pytest.raises(DataError, match=str(victim)):
        verify_dataset(str(scratch))


def test_truncated_shard_is_caught_by_arrow_even_without_checksums(scratch):
    victim = scratch / "val" / "shard-00000-of-00004.arrow"
    victim.write_bytes(victim.read_bytes()[:-300])
    with pytest.raises(DataError, match=f"{victim} is not a readable Arrow file"):
        open_split(str(scratch), "val", verify=False)


def test_shard_with_the_wrong_row_count_is_named(scratch):
    manifest_path = scratch / "manifest.json"
    raw = json.loads(manifest_path.read_text())
    raw["splits"]["test"]["shards"][0]["rows"] += 1
    raw["splits"]["test"]["shards"][1]["rows"] -= 1
    manifest_path.write_text(json.dumps(raw))
    with pytest.raises(
        DataError, match="shard-00000-of-00004.arrow holds 12 rows, manifest says 13"
    ):
        open_split(str(scratch), "test", verify=False)


def test_verify_dataset_accepts_an_intact_dataset(dataset):
    assert verify_dataset(dataset) == load_manifest(dataset)


def test_not_a_prepared_dataset(tmp_path):
    with pytest.raises(DataError, match="is not a prepared dataset"):
        load_manifest(str(tmp_path))


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda raw: "{not json", "invalid manifest"),
        (lambda raw: {**raw, "version": 99}, "this distnet reads distnet-cifar10-arrow v1"),
        (lambda raw: {k: v for k, v in raw.items() if k != "splits"}, "invalid manifest"),
        (lambda raw: {**raw, "mean": raw["mean"][:5]}, "mean has 5 values"),
    ],
)
def test_invalid_manifest(scratch, edit, match):
    raw = json.loads((scratch / "manifest.json").read_text())
    edited = edit(raw)
    text = edited if isinstance(edited, str) else json.dumps(edited)
    (scratch / "manifest.json").write_text(text)
    with pytest.raises(DataError, match=match):
        load_manifest(str(scratch))


@pytest.mark.parametrize("file", ["/etc/passwd.arrow", "../outside.arrow", "train/x.txt"])
def test_manifest_cannot_point_outside_the_dataset(file):
    with pytest.raises(DataError, match="must be a relative .arrow path"):
        ShardInfo(file=file, rows=1, bytes=1, sha256="0" * 64)
