"""cs231n/data_utils.py: get_CIFAR10_data from distnet's prepared CIFAR-10.

The assignment reads the extracted python batches with pickle; distnet reads its Arrow
shards instead (distnet.data.load_cifar10, which prepares them on first use, without
unpickling anything but numpy arrays). X_* are float32 (N, 3, 32, 32), not float64.
"""

from __future__ import annotations

from distnet.data.arrays import SPLITS, load_cifar10
from distnet.errors import InvalidInput


def get_CIFAR10_data(
    num_training=49000, num_validation=1000, num_test=1000, subtract_mean=True, *, path=None
):
    """The first num_training / num_validation / num_test images of distnet's train, val
    (the last 1,000 training images, as in the assignment) and test splits at `path`
    (default: distnet's cache). subtract_mean removes the training split's mean image."""
    data = load_cifar10(path, subtract_mean=subtract_mean)
    for split, wanted in zip(SPLITS, (num_training, num_validation, num_test), strict=True):
        have = len(data[f"y_{split}"])
        if wanted > have:
            raise InvalidInput(f"asked for {wanted} {split} images, the dataset has {have}")
        data[f"X_{split}"] = data[f"X_{split}"][:wanted]
        data[f"y_{split}"] = data[f"y_{split}"][:wanted]
    return data
