"""CIFAR-10 for distnet: download, verify, convert to Arrow shards, read them back."""

from distnet.data.arrays import load_cifar10  # noqa: F401  (the CS231n data dict)
