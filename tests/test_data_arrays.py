"""distnet.data.load_cifar10: the CS231n data dict from a prepared dataset."""

import numpy as np

from distnet.data import load_cifar10
from distnet.data.reader import open_split


def test_the_data_dict_holds_every_split_as_images(tiny_dataset):
    data = load_cifar10(tiny_dataset)
    assert sorted(data) == ["X_test", "X_train", "X_val", "y_test", "y_train", "y_val"]
    for split in ("train", "val", "test"):
        X, y = data[f"X_{split}"], data[f"y_{split}"]
        reader = open_split(tiny_dataset, split)
        assert X.shape == (reader.num_rows, 3, 32, 32) and X.dtype == np.float32
        images, labels = reader.take(np.arange(reader.num_rows))
        np.testing.assert_array_equal(y, labels)
        np.testing.assert_array_equal(X.reshape(len(X), -1), reader.normalize(images))


def test_raw_pixels_without_the_mean(tiny_dataset):
    raw = load_cifar10(tiny_dataset, subtract_mean=False)
    centred = load_cifar10(tiny_dataset)
    assert raw["X_train"].min() >= 0 and raw["X_train"].max() <= 255
    assert not np.allclose(raw["X_train"], centred["X_train"])
