"""The job schema's machinery: ConfigError, the `_Section` base class that checks every
field's type from its annotation before the section's own rules, and the one-line
descriptions of types and values that the errors use."""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable
from dataclasses import fields
from types import NoneType, UnionType
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

from distnet.errors import DistnetError


class ConfigError(DistnetError):
    """A job file or override is invalid; the message names the key (and the file)."""


class _Section:
    """Checks field types from the annotations, then the section's own rules (`_validate`)."""

    SECTION: ClassVar[str]

    def __post_init__(self) -> None:
        for name, hint in get_type_hints(type(self)).items():
            if get_origin(hint) is ClassVar:
                continue
            value = getattr(self, name)
            if not _has_type(value, hint):
                raise ConfigError(
                    f"{self._key(name)} must be {_describe(hint)}, got {_show(value)}"
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{self._key(name)} must be finite, got {_show(value)}")
            if isinstance(value, int) and float in _members(hint):
                object.__setattr__(self, name, float(value))
            if isinstance(value, list):  # frozen all the way down
                object.__setattr__(self, name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        pass

    def _key(self, name: str) -> str:
        return f"{self.SECTION}.{name}" if self.SECTION else name

    def _check(self, name: str, ok: Callable[[Any], bool], rule: str) -> None:
        """`name` must satisfy `ok` (described by `rule`) unless it is unset (None)."""
        value = getattr(self, name)
        if value is not None and not ok(value):
            raise ConfigError(f"{self._key(name)} must be {rule}, got {_show(value)}")

    def _only_with(self, name: str, applies: bool, reason: str) -> None:
        """A setting that has no effect here must keep its default (`reason` says why)."""
        default = next(f.default for f in fields(self) if f.name == name)
        if not applies and getattr(self, name) != default:
            raise ConfigError(f"{self._key(name)} = {_show(getattr(self, name))} {reason}")


def _reject_unknown(table: dict, known: list[str], prefix: str) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown key {prefix}{key}{hint}")


def _members(hint: Any) -> tuple:
    return get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)


def _has_type(value: Any, hint: Any) -> bool:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return isinstance(value, str) and value in args
    if origin in (Union, UnionType):
        return any(_has_type(value, arg) for arg in args)
    if origin is tuple:  # hidden_dims: a TOML array
        return isinstance(value, (list, tuple)) and all(_has_type(v, args[0]) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _show(value: Any) -> str:
    """A value as it would be written in the job file."""
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _describe(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(json.dumps(choice) for choice in get_args(hint))
    if get_origin(hint) is tuple:  # hidden_dims, or model.blocks' tables
        return "a list of integers" if get_args(hint)[0] is int else "a list of tables"
    if isinstance(hint, type) and issubclass(hint, _Section):
        return f"a {hint.__name__}"
    # Optional values can only be left out of a TOML file, so None is not worth mentioning.
    return " or ".join(_TYPE_NAMES[t] for t in _members(hint) if t is not NoneType)
