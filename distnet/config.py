"""Job files: TOML -> typed, validated configuration.

A job file has the top-level keys `name` and `seed` and the tables [data], [model],
[optim], [train], [checkpoint] and [metrics]. Every key is optional and defaults to the
value in the dataclass below; an unknown key, a value of the wrong type (`true` is not an
integer; an integer is fine where a number is expected) or an impossible value raises
ConfigError naming the key as `section.key` and the file:

    job = load_job("jobs/two_layer.toml", ["train.workers=4"])
    model = distnet.models.build_model(job.model)  # the network it describes

`{name}` in `checkpoint.dir` and `metrics.logdir` is replaced by the job's name.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from types import NoneType, UnionType
from typing import (
    Any,
    ClassVar,
    Literal,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)


import tomllib

from distnet.errors import DistnetError
from distnet.schedules import ScheduleKind

UpdateRule = Literal["sgd", "sgd_momentum", "sgd_nesterov", "rmsprop", "adam", "adamw"]

# The settings each update rule reads besides learning_rate (the keys of its config dict).
RULE_SETTINGS: dict[str, tuple[str, ...]] = {
    "sgd": (),
    "sgd_momentum": ("momentum",),
    "sgd_nesterov": ("momentum",),
    "rmsprop": ("decay_rate", "epsilon"),
    "adam": ("beta1", "beta2", "epsilon"),
    "adamw": ("beta1", "beta2", "epsilon", "weight_decay"),
}
# The settings each schedule reads; the others must keep their defaults.
SCHEDULE_SETTINGS: dict[str, tuple[str, ...]] = {
    "epoch_decay": ("lr_decay",),
    "step": ("step_size_epochs", "step_gamma"),
    "cosine": ("warmup_steps", "min_lr"),
    "onecycle": ("warmup_steps", "min_lr"),
}


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
                    f"{self._key(name)} must be {_describe(hint)}, got {_show(value)}")
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


def _default_data_path() -> str:
    return str(Path(os.environ.get("DISTNET_CACHE") or "~/.cache/distnet") / "cifar10")


def _is_uri(path: str) -> bool:
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


@dataclass(frozen=True)
class DataConfig(_Section):
    """The prepared dataset (`path`: a local directory or a pyarrow URI such as s3://b/p)
    and, to prepare it, the CIFAR-10 tarball (`source`: URL or file) and its md5."""

    SECTION: ClassVar[str] = "data"
    path: str = field(default_factory=_default_data_path)
    source: str | None = None
    md5: str | None = None
    verify: bool = True
    shards: int = 8
    num_val: int = 1000
    augment_flip: bool = False
    augment_crop_padding: int = 0

    def _validate(self) -> None:
        self._check("path", bool, "a non-empty path")
        if not _is_uri(self.path):
            object.__setattr__(self, "path", os.path.expanduser(self.path))
        self._check("md5", lambda v: re.fullmatch(r"[0-9a-fA-F]{32}", v), "32 hex digits")
        if self.md5 is not None:
            object.__setattr__(self, "md5", self.md5.lower())
        self._only_with("md5", self.verify, "has no effect with data.verify = false")
        self._check("shards", lambda v: v >= 1, ">= 1")
        self._check("num_val", lambda v: v >= 1, ">= 1")
        self._check("augment_crop_padding", lambda v: 0 <= v <= 31, "in 0..31")


@dataclass(frozen=True)
class ModelConfig(_Section):
    """`two_layer` is the CS231n TwoLayerNet (exactly one hidden layer, no batchnorm or
    dropout); `fc` is FullyConnectedNet (no hidden layers = a linear classifier)."""

    SECTION: ClassVar[str] = "model"
    kind: Literal["two_layer", "fc"] = "two_layer"
    hidden_dims: tuple[int, ...] = (100,)
    use_batchnorm: bool = False
    dropout: float = 0.0  # probability of dropping a unit, as in the assignment
    reg: float = 0.0
    weight_scale: float = 1e-3
    dtype: Literal["float32", "float64"] = "float32"

    def _validate(self) -> None:
        self._check("hidden_dims", lambda v: all(d > 0 for d in v), "a list of positive integers")
        self._check("dropout", lambda v: 0 <= v < 1, "in [0, 1)")
        self._check("reg", lambda v: v >= 0, ">= 0")
        self._check("weight_scale", lambda v: v > 0, "> 0")
        if self.kind == "two_layer":
            self._check("hidden_dims", lambda v: len(v) == 1, 'one layer for kind = "two_layer"')
        for name in ("use_batchnorm", "dropout"):
            self._only_with(name, self.kind == "fc", 'applies only with kind = "fc"')


@dataclass(frozen=True)
class OptimConfig(_Section):
    """The update rule and its settings (unset = the rule's own default), and the
    learning-rate schedule (see distnet.schedules); `lr_decay` is the Solver's per-epoch
    multiplicative decay."""

    SECTION: ClassVar[str] = "optim"
    update_rule: UpdateRule = "sgd"
    learning_rate: float = 1e-3
    momentum: float | None = None
    decay_rate: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    epsilon: float | None = None
    weight_decay: float | None = None  # decoupled (AdamW); `model.reg` is the L2 penalty
    lr_decay: float = 1.0
    schedule: ScheduleKind = "epoch_decay"
    warmup_steps: int = 0
    step_size_epochs: int | None = None
    step_gamma: float = 0.1
    min_lr: float = 0.0

    def _validate(self) -> None:
        self._check("learning_rate", lambda v: v > 0, "> 0")
        for name in ("momentum", "decay_rate", "beta1", "beta2"):
            self._check(name, lambda v: 0 <= v < 1, "in [0, 1)")
        self._check("epsilon", lambda v: v > 0, "> 0")
        self._check("weight_decay", lambda v: v >= 0, ">= 0")
        self._check("lr_decay", lambda v: 0 < v <= 1, "in (0, 1]")
        self._check("warmup_steps", lambda v: v >= 0, ">= 0")
        self._check("step_size_epochs", lambda v: v >= 1, ">= 1")
        self._check("step_gamma", lambda v: 0 < v <= 1, "in (0, 1]")
        self._check("min_lr", lambda v: 0 <= v < self.learning_rate, "in [0, learning_rate)")
        for kind, table in (("update_rule", RULE_SETTINGS), ("schedule", SCHEDULE_SETTINGS)):
            chosen = getattr(self, kind)
            uses = ", ".join(table[chosen]) or "only learning_rate"
            for name in sorted({s for settings in table.values() for s in settings}):
                self._only_with(name, name in table[chosen],
                                f'has no effect with {kind} = "{chosen}" (it uses {uses})')
        if self.schedule == "step" and self.step_size_epochs is None:
            raise ConfigError('optim.step_size_epochs is required with schedule = "step"')
        if self.schedule == "onecycle" and self.warmup_steps == 0:
            raise ConfigError('optim.warmup_steps must be > 0 with schedule = "onecycle"')

    def rule_config(self) -> dict[str, float]:
        """The update rule's config dict: learning_rate and the rule's settings that are set."""
        settings = {name: getattr(self, name) for name in RULE_SETTINGS[self.update_rule]}
        return {"learning_rate": self.learning_rate} | {
            k: v for k, v in settings.items() if v is not None
        }


@dataclass(frozen=True)
class TrainConfig(_Section):
    """The run: `batch_size` is the global batch, split across the workers; when it does
    not divide evenly the first `batch_size % workers` workers take one sample more."""

    SECTION: ClassVar[str] = "train"
    num_epochs: int = 10
    batch_size: int = 100
    workers: int = 2
    servers: int = 1
    mode: Literal["sync", "async", "ssp"] = "sync"
    staleness: int = 0
    backup_workers: int = 0
    compression: Literal["none", "fp16", "topk"] = "none"
    topk_ratio: float = 0.01
    num_train_samples: int = 1000  # subsample for train accuracy; 0 = the whole train set
    eval_batch_size: int = 1000
    early_stopping_patience: int | None = None  # epochs without a better val accuracy
    max_steps: int | None = None  # stop early after this many steps (tests, benchmarks)
    worker_cpus: float = 1.0
    # How a synchronous step (without backup workers) travels: "graph" compiles it once into
    # a Ray Compiled Graph (shared-memory channels between the actors, no task per step) on a
    # single-node Ray; "tasks" submits Ray tasks whose arguments go through the object store.
    # Async, SSP, backup workers and multi-node clusters always use tasks.
    transport: Literal["graph", "tasks"] = "graph"
    # Threads of each parameter server's update rule; 0 = its node's cores, at most 4 (in
    # synchronous mode the workers wait while the servers update).
    server_threads: int = 0

    def _validate(self) -> None:
        for name in ("num_epochs", "batch_size", "workers", "servers", "eval_batch_size"):
            self._check(name, lambda v: v >= 1, ">= 1")
        for name in ("early_stopping_patience", "max_steps"):
            self._check(name, lambda v: v >= 1, ">= 1")
        for name in ("staleness", "backup_workers", "num_train_samples", "server_threads"):
            self._check(name, lambda v: v >= 0, ">= 0")
        self._check("topk_ratio", lambda v: 0 < v <= 1, "in (0, 1]")
        self._check("worker_cpus", lambda v: v > 0, "> 0")
        self._check("batch_size", lambda v: v >= self.workers,
                    f"at least train.workers ({self.workers})")
        self._only_with("staleness", self.mode == "ssp", 'applies only with mode = "ssp"')
        self._only_with("backup_workers", self.mode == "sync", 'applies only with mode = "sync"')
        self._only_with("topk_ratio", self.compression == "topk",
                        'applies only with compression = "topk"')

    def worker_batch_sizes(self) -> list[int]:
        """Each worker's share of the global batch (the first ones take the remainder)."""
        share, extra = divmod(self.batch_size, self.workers)
        return [share + (rank < extra) for rank in range(self.workers)]


@dataclass(frozen=True)
class CheckpointConfig(_Section):
    """Where and how often to checkpoint: every `every_steps` steps (0 = only at the end of
    each epoch and of the run), keeping the newest `keep` files."""

    SECTION: ClassVar[str] = "checkpoint"
    dir: str = "checkpoints/{name}"
    every_steps: int = 0
    keep: int = 3

    def _validate(self) -> None:
        self._check("dir", bool, "a non-empty path")
        self._check("every_steps", lambda v: v >= 0, ">= 0")
        self._check("keep", lambda v: v >= 1, ">= 1")


@dataclass(frozen=True)
class MetricsConfig(_Section):
    """TensorBoard logs: scalars every `log_every_steps` steps, weight histograms per epoch."""

    SECTION: ClassVar[str] = "metrics"
    logdir: str = "runs/{name}"
    log_every_steps: int = 10  # each step costs the driver ~15 scalar writes (~0.6 ms)
    histograms: bool = True

    def _validate(self) -> None:
        self._check("logdir", bool, "a non-empty path")
        self._check("log_every_steps", lambda v: v >= 1, ">= 1")


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
        self._check("name", lambda v: re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v),
                    "letters, digits, '.', '_' or '-'")
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
            close = [k for k in keys if k.rpartition(".")[2] == name][:1] or \
                difflib.get_close_matches(key.strip(), keys, n=1)
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
    if get_origin(hint) is tuple:
        return "a list of integers"
    if hint in SECTIONS.values():
        return f"a {hint.__name__}"
    # Optional values can only be left out of a TOML file, so None is not worth mentioning.
    return " or ".join(_TYPE_NAMES[t] for t in _members(hint) if t is not NoneType)
