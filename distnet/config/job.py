"""A whole job: JobConfig (the tables of sections.py under `name` and `seed`), read from a
TOML file by load_job with `--set` overrides applied by apply_overrides."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from distnet.config.schema import ConfigError, _reject_unknown, _Section, _show
from distnet.config.sections import (
    CheckpointConfig,
    DataConfig,
    MetricsConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)

SECTIONS: dict[str, type[_Section]] = {
    cls.SECTION: cls
    for cls in (DataConfig, ModelConfig, OptimConfig, TrainConfig, CheckpointConfig, MetricsConfig)
}


@dataclass(frozen=True)
class JobConfig(_Section):
    """A whole job; build it with load_job or JobConfig.from_dict."""

    SECTION: ClassVar[str] = ""
    name: str = "job"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def _validate(self) -> None:
        # The name becomes a directory name, so keep it to characters every filesystem takes.
        self._check(
            "name",
            lambda v: re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v),
            "letters, digits, '.', '_' or '-'",
        )
        self._check("seed", lambda v: 0 <= v < 2**32, "in [0, 2**32)")
        for section, key in (("checkpoint", "dir"), ("metrics", "logdir")):
            table = getattr(self, section)
            value = getattr(table, key)
            try:
                resolved = os.path.expanduser(value.format(name=self.name))
            except (KeyError, IndexError, ValueError):
                raise ConfigError(
                    f"{section}.{key} may only contain the placeholder {{name}}, got {_show(value)}"
                ) from None
            if "://" in resolved:  # a bad URI is one line now, not once Ray has started
                from distnet.remote_path import uri_problem

                if problem := uri_problem(resolved):
                    raise ConfigError(f"{section}.{key} {problem}: {_show(resolved)}")
            object.__setattr__(self, section, dataclasses.replace(table, **{key: resolved}))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<dict>") -> JobConfig:
        """Validate a parsed job file (or `to_dict()` output); errors name `source`."""
        try:
            _reject_unknown(raw, [f.name for f in fields(cls)], "")
            values = dict(raw)
            for section, section_cls in SECTIONS.items():
                table = values.get(section, {})
                if not isinstance(table, dict):
                    raise ConfigError(f"{section} must be a table, got {_show(table)}")
                _reject_unknown(table, [f.name for f in fields(section_cls)], f"{section}.")
                values[section] = section_cls(**table)
            return cls(**values)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable values; `from_dict(to_dict())` gives an equal config."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


DEFAULT_JOB = "jobs/two_layer.toml"  # inside the distnet package (distnet/jobs links to jobs/)


def load_job(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> JobConfig:
    """Read a TOML job file (None: the packaged default job) and apply `--set` overrides."""
    if path is None:
        source, job_file = f"distnet/{DEFAULT_JOB}", resources.files("distnet") / DEFAULT_JOB
    else:
        source, job_file = str(path), Path(path)
    try:
        raw = tomllib.loads(job_file.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{source}: cannot read job file: {err.strerror or err}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{source}: not a valid TOML file: {err}") from None
    if overrides:
        raw = apply_overrides(raw, overrides)
        source += " with --set " + " ".join(overrides)
    return JobConfig.from_dict(raw, source)


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    """A copy of `raw` with each "section.key=value" (or "name=value") applied.

    The value is read as a TOML value (4, 1e-3, true, [100, 50], "x"); text that is not
    valid TOML is taken as a string, so `data.path=/tmp/cifar` needs no quotes.
    """
    result = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    known = {"": [f.name for f in fields(JobConfig) if f.name not in SECTIONS]}
    known |= {section: [f.name for f in fields(cls)] for section, cls in SECTIONS.items()}
    for item in overrides:
        key, sep, text = item.partition("=")
        section, _, name = key.strip().rpartition(".")
        if not sep or name not in known.get(section, ()):
            keys = [f"{s}.{n}" if s else n for s, names in known.items() for n in names]
            # The key in the section it belongs to, else the closest spelling.
            close = [k for k in keys if k.rpartition(".")[2] == name][
                :1
            ] or difflib.get_close_matches(key.strip(), keys, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problem = f"unknown key {key.strip()}{hint}" if sep else "expected section.key=value"
            raise ConfigError(f"--set {item!r}: {problem}")
        try:
            value = tomllib.loads(f"value = {text.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        if section and not isinstance(result.get(section, {}), dict):
            raise ConfigError(f"{section} must be a table, got {_show(result[section])}")
        (result.setdefault(section, {}) if section else result)[name] = value
    return result
