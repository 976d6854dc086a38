"""`manifest.json`: what a prepared dataset holds, written last so its presence means "complete".

Everything a reader needs is in it, in plain JSON (no pickle): the splits with their shard
files, row counts, sizes and SHA-256, label names, image shape and column types, the MD5
of the source tarball and the per-pixel mean of the training split.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass, field

import numpy as np

from distnet.data.errors import DataError

MANIFEST_NAME = "manifest.json"
FORMAT = "distnet-cifar10-arrow"
VERSION = 1
# Column types, as pyarrow prints them; the reader checks each shard's schema against these.
COLUMNS = {"image": "fixed_size_list<item: uint8>[3072]", "label": "int64"}
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ShardInfo:
    file: str  # relative to the dataset root, e.g. "train/shard-00000-of-00008.arrow"
    rows: int
    bytes: int
    sha256: str

    def __post_init__(self):
        parts = self.file.split("/")
        if posixpath.isabs(self.file) or ".." in parts or not self.file.endswith(".arrow"):
            raise DataError(f"manifest shard file {self.file!r} must be a relative .arrow path")
        if self.rows < 0 or self.bytes < 0 or len(self.sha256) != 64:
            raise DataError(f"manifest entry for {self.file} has bad rows/bytes/sha256")


@dataclass(frozen=True)
class SplitInfo:
    rows: int
    shards: list[ShardInfo]

    def __post_init__(self):
        if sum(shard.rows for shard in self.shards) != self.rows:
            raise DataError(f"manifest split rows {self.rows} != sum of its shards' rows")


@dataclass(frozen=True)
class Manifest:
    splits: dict[str, SplitInfo]
    label_names: list[str]
    source_md5: str
    num_val: int
    mean: list[float] = field(repr=False)  # per-pixel mean of the train split, 3072 values
    image_shape: tuple[int, int, int] = (3, 32, 32)
    columns: dict[str, str] = field(default_factory=lambda: dict(COLUMNS))
    format: str = FORMAT
    version: int = VERSION

    def __post_init__(self):
        if self.format != FORMAT or self.version != VERSION:
            raise DataError(f"manifest is {self.format} v{self.version}, "
                            f"this distnet reads {FORMAT} v{VERSION}")
        if set(self.splits) != set(SPLITS):
            raise DataError(f"manifest splits are {sorted(self.splits)}, expected {list(SPLITS)}")
        if self.columns != COLUMNS:
            raise DataError(f"manifest columns {self.columns} differ from {COLUMNS}")
        if len(self.mean) != int(np.prod(self.image_shape)):
            raise DataError(f"manifest mean has {len(self.mean)} values, "
                            f"expected {int(np.prod(self.image_shape))}")

    @property
    def shards_per_split(self) -> int:
        return len(self.splits["train"].shards)

    def mean_array(self) -> np.ndarray:
        return np.asarray(self.mean, dtype=np.float32)

    def to_json(self) -> str:
        body = {"format": self.format, "version": self.version, **asdict(self)}
        mean = body.pop("mean")
        # The mean goes on one line at the end so the rest stays readable with `cat`.
        return json.dumps(body, indent=1)[:-2] + f',\n "mean": {json.dumps(mean)}\n}}\n'

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> Manifest:
        try:
            raw = json.loads(text)
            splits = {name: SplitInfo(rows=split["rows"],
                                      shards=[ShardInfo(**shard) for shard in split["shards"]])
                      for name, split in raw.pop("splits").items()}
            raw["image_shape"] = tuple(raw["image_shape"])
            return cls(splits=splits, **raw)
        except DataError as err:
            raise DataError(f"{where}: {err}") from err
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise DataError(f"{where}: invalid manifest ({type(err).__name__}: {err})") from err
