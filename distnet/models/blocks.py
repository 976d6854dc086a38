"""The blocks a ConvNet is described by: plain data, checked on their own when made and
against the shapes they meet by `check_blocks`, before any weight is allocated.

    Conv(filters, size=3, stride=1, pad=None, norm=None, groups=None)
        conv - [batchnorm | groupnorm(groups)] - relu; pad None is (size - 1) // 2
    Pool(size=2, stride=None)      max pool, size x size windows (stride None: = size)
    Dropout(p)                     drops each unit with probability p (the 2017 meaning)
    Affine(units)                  affine - relu, a hidden layer of the head

Conv and Pool blocks come first; the first Affine flattens. The class scores' affine layer
follows the last block by itself. A job file writes blocks as tables, which
`parse_blocks` reads strictly:

    >>> parse_blocks([{"type": "conv", "filters": 8}, {"type": "pool"}])
    [Conv(filters=8, size=3, stride=1, pad=1, norm=None, groups=None), Pool(size=2, stride=2)]
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from distnet.errors import InvalidInput

NORMS = (None, "batchnorm", "groupnorm")


def _integer(block, name: str, minimum: int) -> None:
    value = getattr(block, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidInput(
            f"{block.kind} block: {name} must be an integer >= {minimum}, got {value!r}"
        )
    object.__setattr__(block, name, int(value))


def _tiles(size: int, window: int, stride: int, axis: str, what: str) -> int:
    """Window positions along one axis; the windows must fit and tile it exactly."""
    if window > size:
        raise InvalidInput(f"the {window} {axis} window exceeds the {what} {axis} {size}")
    if (size - window) % stride:
        raise InvalidInput(
            f"windows of {axis} {window} at stride {stride} do not tile the "
            f"{what} {axis} {size} ({size} - {window} is not a multiple of "
            f"{stride})"
        )
    return 1 + (size - window) // stride


def _image(shape: tuple[int, ...], kind: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise InvalidInput(
            f"a {kind} block needs (C, H, W) images, but it follows an affine "
            f"block (features {shape}); conv and pool blocks come first"
        )
    return shape


@dataclass(frozen=True)
class Conv:
    """conv(filters, size x size, stride, pad) - [batchnorm | groupnorm(groups)] - relu."""

    filters: int
    size: int = 3
    stride: int = 1
    pad: int | None = None  # None: (size - 1) // 2, which keeps H, W for odd sizes at stride 1
    norm: str | None = None  # None, "batchnorm" or "groupnorm"
    groups: int | None = None  # groupnorm's G, which must divide filters

    kind = "conv"

    def __post_init__(self):
        for name in ("filters", "size", "stride"):
            _integer(self, name, 1)
        if self.pad is None:
            object.__setattr__(self, "pad", (self.size - 1) // 2)
        _integer(self, "pad", 0)
        if self.norm not in NORMS:
            raise InvalidInput(f"conv block: norm must be one of {list(NORMS)}, got {self.norm!r}")
        if self.norm == "groupnorm":
            _integer(self, "groups", 1)
            if self.filters % self.groups:
                raise InvalidInput(
                    f"conv block: groups {self.groups} does not divide its {self.filters} channels"
                )
        elif self.groups is not None:
            raise InvalidInput('conv block: groups applies only with norm = "groupnorm"')

    def describe(self) -> str:
        norm = (
            f" groupnorm({self.groups})"
            if self.norm == "groupnorm"
            else (f" {self.norm}" if self.norm else "")
        )
        return (
            f"conv {self.filters} {self.size}x{self.size} stride {self.stride} pad {self.pad}{norm}"
        )

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        _, H, W = _image(shape, self.kind)
        what = "padded input" if self.pad else "input"
        return (
            self.filters,
            _tiles(H + 2 * self.pad, self.size, self.stride, "height", what),
            _tiles(W + 2 * self.pad, self.size, self.stride, "width", what),
        )


@dataclass(frozen=True)
class Pool:
    """Max pooling over size x size windows at `stride` (None: = size, windows that tile)."""

    size: int = 2
    stride: int | None = None

    kind = "pool"

    def __post_init__(self):
        if self.stride is None:
            object.__setattr__(self, "stride", self.size)
        _integer(self, "size", 1)
        _integer(self, "stride", 1)

    def describe(self) -> str:
        return f"pool {self.size}x{self.size} stride {self.stride}"

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        C, H, W = _image(shape, self.kind)
        return (
            C,
            _tiles(H, self.size, self.stride, "height", "input"),
            _tiles(W, self.size, self.stride, "width", "input"),
        )


@dataclass(frozen=True)
class Dropout:
    """Inverted dropout: each unit dropped with probability p in [0, 1)."""

    p: float

    kind = "dropout"

    def __post_init__(self):
        if isinstance(self.p, bool) or not isinstance(self.p, numbers.Real) or not 0 <= self.p < 1:
            raise InvalidInput(f"dropout block: p must be a number in [0, 1), got {self.p!r}")
        object.__setattr__(self, "p", float(self.p))

    def describe(self) -> str:
        return f"dropout {self.p:g}"

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape


@dataclass(frozen=True)
class Affine:
    """affine(units) - relu: a hidden layer of the head (flattens images)."""

    units: int

    kind = "affine"

    def __post_init__(self):
        _integer(self, "units", 1)

    def describe(self) -> str:
        return f"affine {self.units}"

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.units,)


Block = Conv | Pool | Dropout | Affine
KINDS: dict[str, type] = {cls.kind: cls for cls in (Conv, Pool, Dropout, Affine)}


def parse_block(spec: Block | Mapping, where: str = "block") -> Block:
    """A block, or a mapping {"type": "conv" | "pool" | "dropout" | "affine", field: value}
    with exactly that block's fields; any other key is an error naming it."""
    if isinstance(spec, tuple(KINDS.values())):
        return spec
    if not isinstance(spec, Mapping):
        raise InvalidInput(f"{where}: expected a block or a table with a type, got {spec!r}")
    kind = spec.get("type")
    if kind not in KINDS:
        raise InvalidInput(f"{where}: type must be one of {list(KINDS)}, got {kind!r}")
    cls = KINDS[kind]
    fields = {f.name for f in dataclasses.fields(cls)}
    settings = {key: value for key, value in spec.items() if key != "type"}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise InvalidInput(
            f"{where} ({kind}): unknown key {unknown[0]!r} (known: {', '.join(sorted(fields))})"
        )
    try:
        return cls(**settings)
    except TypeError:  # a required field is missing
        missing = sorted(
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.name not in settings
        )
        raise InvalidInput(f"{where} ({kind}): missing {', '.join(missing)}") from None
    except InvalidInput as err:
        raise InvalidInput(f"{where}: {err}") from None


def parse_blocks(specs: Sequence) -> list[Block]:
    """parse_block for each; errors name the block by its index."""
    if isinstance(specs, (str, bytes, Mapping)) or not isinstance(specs, Sequence):
        raise InvalidInput(f"blocks must be a list of blocks, got {type(specs).__name__}")
    return [parse_block(spec, f"block {i}") for i, spec in enumerate(specs)]


def check_blocks(
    blocks: Sequence[Block], input_shape: tuple[int, int, int]
) -> list[tuple[int, ...]]:
    """input_shape (C, H, W), then the shape of one sample after each block.

    A block that does not fit what it is given (a pool or conv that does not tile, a conv
    after an affine block) is an InvalidInput naming the block and the shape it met.
    """
    shapes = [tuple(input_shape)]
    for i, block in enumerate(blocks):
        try:
            shapes.append(block.output_shape(shapes[-1]))
        except InvalidInput as err:
            raise InvalidInput(
                f"block {i} ({block.describe()}) on {_shape_text(shapes[-1])}: {err}"
            ) from None
    return shapes


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) + (" images" if len(shape) == 3 else " features")
