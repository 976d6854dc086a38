"""`manifest.json`: what a prepared dataset holds, written last so its presence means "complete".

Everything a reader needs is in it, in plain JSON (no pickle): the splits with their shard
files, row counts, sizes and SHA-256, label names, image shape and column types, the MD5
of the source tarball and the per-pixel mean of the training split.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from dataclasses import MISSING, asdict, dataclass, field, fields

import numpy as np

from distnet.data.errors import DataError

MANIFEST_NAME = "manifest.json"
FORMAT = "distnet-cifar10-arrow"
VERSION = 1
# Column types, as pyarrow prints them; the reader checks each shard's schema against these.
COLUMNS = {"image": "fixed_size_list<item: uint8>[3072]", "label": "int64"}
SPLITS = ("train", "val", "test")
_HEX = re.compile(r"[0-9a-f]+")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_hex(value, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and bool(_HEX.fullmatch(value))


@dataclass(frozen=True)
class ShardInfo:
    file: str  # relative to the dataset root, e.g. "train/shard-00000-of-00008.arrow"
    rows: int
    bytes: int
    sha256: str

    def __post_init__(self):
        if not isinstance(self.file, str):
            raise DataError(f"manifest shard file {self.file!r} must be a string")
        parts = self.file.split("/")
        if posixpath.isabs(self.file) or ".." in parts or not self.file.endswith(".arrow"):
            raise DataError(f"manifest shard file {self.file!r} must be a relative .arrow path")
        for name in ("rows", "bytes"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise DataError(
                    f"manifest entry for {self.file}: {name} must be an integer >= 0, got {value!r}"
                )
        if not _is_hex(self.sha256, 64):
            raise DataError(
                f"manifest entry for {self.file}: sha256 must be 64 lowercase hex "
                f"digits, got {self.sha256!r:.80}"
            )


@dataclass(frozen=True)
class SplitInfo:
    rows: int
    shards: list[ShardInfo]

    def __post_init__(self):
        if not _is_int(self.rows) or not self.shards:
            raise DataError("manifest split must have integer rows and at least one shard")
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
            raise DataError(
                f"manifest is {self.format} v{self.version}, this distnet reads {FORMAT} v{VERSION}"
            )
        if set(self.splits) != set(SPLITS):
            raise DataError(f"manifest splits are {sorted(self.splits)}, expected {list(SPLITS)}")
        if self.columns != COLUMNS:
            raise DataError(f"manifest columns {self.columns} differ from {COLUMNS}")
        if not (
            isinstance(self.label_names, list)
            and self.label_names
            and all(isinstance(name, str) for name in self.label_names)
        ):
            raise DataError(
                f"manifest label_names must be a list of strings, got {self.label_names!r:.80}"
            )
        if not _is_hex(self.source_md5, 32):
            raise DataError(
                f"manifest source_md5 must be 32 lowercase hex digits, got {self.source_md5!r:.80}"
            )
        if not _is_int(self.num_val) or self.num_val != self.splits["val"].rows:
            raise DataError(
                f"manifest num_val {self.num_val!r} differs from the val split's "
                f"{self.splits['val'].rows} rows"
            )
        if not isinstance(self.mean, list) or len(self.mean) != int(np.prod(self.image_shape)):
            count = len(self.mean) if isinstance(self.mean, list) else type(self.mean).__name__
            raise DataError(
                f"manifest mean has {count} values, expected {int(np.prod(self.image_shape))}"
            )
        # A NaN or a string here would silently poison every minibatch.
        bad = next(
            (
                v
                for v in self.mean
                if isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or not 0 <= v <= 255
            ),
            None,
        )
        if bad is not None:
            raise DataError(
                f"manifest mean must hold finite pixel values in [0, 255], found {bad!r}"
            )

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
        """Parse and check a manifest; any problem is a DataError naming `where` and what
        is wrong (the key, the value), never a fallback."""
        try:
            try:
                raw = json.loads(text)
            except (ValueError, UnicodeDecodeError) as err:
                raise DataError(f"invalid manifest: not JSON ({err})") from None
            _check_keys(raw, cls, "the top level")
            splits = raw.pop("splits")
            if not isinstance(splits, dict):
                raise DataError("invalid manifest: splits must be an object")
            parsed = {}
            for name, split in splits.items():
                _check_keys(split, SplitInfo, f"split {name!r}")
                if not isinstance(split["shards"], list):
                    raise DataError(f"invalid manifest: split {name!r}: shards must be a list")
                for shard in split["shards"]:
                    _check_keys(shard, ShardInfo, f"a shard of split {name!r}")
                parsed[name] = SplitInfo(
                    rows=split["rows"], shards=[ShardInfo(**shard) for shard in split["shards"]]
                )
            shape = raw.get("image_shape", [3, 32, 32])
            if not (isinstance(shape, list) and all(_is_int(n) and n > 0 for n in shape)):
                raise DataError(
                    f"manifest image_shape must be a list of positive integers, got {shape!r}"
                )
            raw["image_shape"] = tuple(shape)
            return cls(splits=parsed, **raw)
        except DataError as err:
            raise DataError(f"{where}: {err}") from err
        except (ValueError, KeyError, TypeError, AttributeError) as err:  # a case not foreseen
            raise DataError(f"{where}: invalid manifest ({type(err).__name__}: {err})") from err


def _check_keys(raw, cls, what: str) -> None:
    """`raw` is a JSON object with every key `cls` requires and no key it does not know."""
    if not isinstance(raw, dict):
        raise DataError(f"invalid manifest: {what} must be a JSON object, got {type(raw).__name__}")
    known = {f.name for f in fields(cls)}
    required = {
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    }
    if missing := sorted(required - set(raw)):
        raise DataError(f"invalid manifest: {what} lacks the key(s) {', '.join(missing)}")
    if unknown := sorted(set(raw) - known):
        raise DataError(f"invalid manifest: {what} has unknown key(s) {', '.join(unknown)}")
