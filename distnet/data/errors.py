"""The data area's error type: every bad tarball, shard, manifest or path raises it."""

from distnet.errors import DistnetError


class DataError(DistnetError):
    """Bad input to the data pipeline (tarball, checksum, shard, manifest, location)."""
