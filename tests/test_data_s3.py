"""Datasets on object storage: prepare to and read from an S3 URI, against a real
S3-compatible server (moto's, on 127.0.0.1) through pyarrow's own S3 filesystem."""

import time

import numpy as np
import pytest
from datagen import cifar_members, fake_cifar, md5_of, write_tarball
from pyarrow import fs as pafs
from s3server import s3_server

from distnet.data.check import check_dataset
from distnet.data.errors import DataError
from distnet.data.prepare import prepare_dataset
from distnet.data.reader import load_manifest, open_split, verify_dataset

NUM_VAL = 20


@pytest.fixture(scope="module")
def s3():
    with s3_server("datasets") as server:
        yield server.filesystem, server.uri


@pytest.fixture(scope="module")
def data():
    return fake_cifar(40, 30, seed=5)


@pytest.fixture(scope="module")
def on_s3(s3, data, tmp_path_factory):
    filesystem, uri = s3
    tarball = write_tarball(tmp_path_factory.mktemp("s3") / "c.tar.gz", cifar_members(data))
    prepare_dataset(
        uri("cifar10"),
        source=str(tarball),
        md5=md5_of(tarball),
        shards=3,
        num_val=NUM_VAL,
        progress=False,
    )
    return tarball


def test_prepare_writes_shards_and_manifest_as_objects(s3, on_s3):
    filesystem, uri = s3
    keys = {
        info.path
        for info in filesystem.get_file_info(pafs.FileSelector("datasets/cifar10", recursive=True))
        if info.is_file
    }
    assert "datasets/cifar10/manifest.json" in keys
    assert len([key for key in keys if key.endswith(".arrow")]) == 9
    assert not [key for key in keys if ".tmp-" in key]


def test_workers_read_their_rows_bit_exact_from_s3(s3, on_s3, data):
    _, uri = s3
    truth = data.train_images[:-NUM_VAL], data.train_labels[:-NUM_VAL]
    parts = [open_split(uri("cifar10"), "train", i, 2) for i in range(2)]
    images = np.concatenate([p.take(np.arange(p.num_rows))[0] for p in parts])
    np.testing.assert_array_equal(images, truth[0])
    np.testing.assert_array_equal(np.concatenate([p.labels for p in parts]), truth[1])
    test = open_split(uri("cifar10"), "test")
    np.testing.assert_array_equal(test.take(np.arange(30))[0], data.test_images)
    assert verify_dataset(uri("cifar10")) == load_manifest(uri("cifar10"))


def test_rerun_on_s3_rewrites_nothing(s3, on_s3):
    filesystem, uri = s3
    selector = pafs.FileSelector("datasets/cifar10", recursive=True)
    before = {info.path: info.mtime for info in filesystem.get_file_info(selector)}
    time.sleep(1.1)  # S3 reports modification times in whole seconds
    prepare_dataset(
        uri("cifar10"),
        source=str(on_s3),
        md5=md5_of(on_s3),
        shards=3,
        num_val=NUM_VAL,
        progress=False,
    )
    assert {info.path: info.mtime for info in filesystem.get_file_info(selector)} == before


def test_corrupted_object_is_named(s3, on_s3):
    filesystem, uri = s3
    prepare_dataset(
        uri("damaged"),
        source=str(on_s3),
        md5=md5_of(on_s3),
        shards=3,
        num_val=NUM_VAL,
        progress=False,
    )
    key = "datasets/damaged/val/shard-00002-of-00003.arrow"
    with filesystem.open_input_stream(key) as stream:
        content = stream.read()
    with filesystem.open_output_stream(key) as stream:
        stream.write(content[:-10])
    with pytest.raises(
        DataError, match="shard datasets/damaged/val/shard-00002-of-00003.arrow is corrupt"
    ):
        open_split(uri("damaged"), "val", verify=True)


def test_missing_dataset_on_s3(s3):
    _, uri = s3
    with pytest.raises(DataError, match="is not a prepared dataset"):
        load_manifest(uri("nothing-here"))


def test_check_dataset_on_s3_reads_train_metadata_and_hashes_val_and_test(s3, on_s3):
    filesystem, uri = s3
    prepare_dataset(
        uri("flipped"),
        source=str(on_s3),
        md5=md5_of(on_s3),
        shards=3,
        num_val=NUM_VAL,
        progress=False,
    )
    assert check_dataset(uri("flipped"), num_workers=2) == load_manifest(uri("flipped"))
    for split in ("train", "test"):
        key = f"datasets/flipped/{split}/shard-00001-of-00003.arrow"
        with filesystem.open_input_stream(key) as stream:
            content = bytearray(stream.read())
        content[len(content) // 2] ^= 0xFF  # pixels: the Arrow metadata still reads
        with filesystem.open_output_stream(key) as stream:
            stream.write(bytes(content))
        if split == "train":  # left to the worker that opens it, not read whole here
            check_dataset(uri("flipped"))
            with pytest.raises(DataError, match=f"shard {key} is corrupt"):
                open_split(uri("flipped"), "train", 0, 2, verify=True)
    with pytest.raises(
        DataError, match="shard datasets/flipped/test/shard-00001-of-00003.arrow is corrupt"
    ):
        check_dataset(uri("flipped"))
