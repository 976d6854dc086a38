"""The tables of a job file, one frozen dataclass each: [data], [model], [optim], [train],
[checkpoint] and [metrics]. The update rules and their settings come from distnet.optim,
the schedules and theirs from distnet.schedules, each of which checks its own."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

from distnet import optim, schedules
from distnet.config.schema import ConfigError, _Section, _show
from distnet.errors import InvalidInput
from distnet.models.blocks import check_blocks, parse_blocks
from distnet.models.build import CIFAR_IMAGE, CONV_KINDS

UpdateRule = Literal[tuple(optim.RULES)]
# The settings each update rule reads besides learning_rate (the keys of its config dict);
# each is a field of OptimConfig.
RULE_SETTINGS: dict[str, tuple[str, ...]] = {
    rule: tuple(key for key in defaults if key != "learning_rate")
    for rule, defaults in optim.DEFAULTS.items()
}


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
    dropout); `fc` is FullyConnectedNet (no hidden layers = a linear classifier);
    `three_layer_conv` is ThreeLayerConvNet (conv num_filters x filter_size^2 - relu - 2x2
    max pool - affine hidden_dims[0] - relu - affine); `conv` is the ConvNet its `blocks`
    describe, one [[model.blocks]] table each (distnet/models/blocks.py: type = "conv",
    "pool", "dropout" or "affine" and that block's fields), checked here against CIFAR's
    3x32x32 images. weight_init = "he" (conv kinds) draws each layer's weights with std
    sqrt(2 / fan_in) instead of weight_scale."""

    SECTION: ClassVar[str] = "model"
    kind: Literal["two_layer", "fc", "three_layer_conv", "conv"] = "two_layer"
    hidden_dims: tuple[int, ...] = (100,)
    use_batchnorm: bool = False
    dropout: float = 0.0  # probability of dropping a unit, as in the assignment
    num_filters: int = 32  # three_layer_conv
    filter_size: int = 7  # three_layer_conv
    blocks: tuple[dict, ...] = ()  # conv
    reg: float = 0.0
    weight_scale: float = 1e-3
    weight_init: Literal["normal", "he"] = "normal"
    dtype: Literal["float32", "float64"] = "float32"

    def _validate(self) -> None:
        self._check("hidden_dims", lambda v: all(d > 0 for d in v), "a list of positive integers")
        self._check("dropout", lambda v: 0 <= v < 1, "in [0, 1)")
        self._check("reg", lambda v: v >= 0, ">= 0")
        self._check("weight_scale", lambda v: v > 0, "> 0")
        if self.kind in ("two_layer", "three_layer_conv"):
            self._check("hidden_dims", lambda v: len(v) == 1, f'one layer for kind = "{self.kind}"')
        self._check("num_filters", lambda v: v >= 1, ">= 1")
        # 'same' padding, (filter_size - 1) // 2, keeps 32x32 only for odd sizes
        self._check("filter_size", lambda v: v >= 1 and v % 2 == 1, "odd and >= 1")
        for names, kind in (
            (("use_batchnorm", "dropout"), "fc"),
            (("num_filters", "filter_size"), "three_layer_conv"),
            (("blocks",), "conv"),
        ):
            for name in names:
                self._only_with(name, self.kind == kind, f'applies only with kind = "{kind}"')
        self._only_with(
            "hidden_dims",
            self.kind != "conv",
            'does not apply with kind = "conv" (its affine blocks are the hidden layers)',
        )
        self._only_with(
            "weight_init",
            self.kind in CONV_KINDS,
            'applies only with kind = "three_layer_conv" or "conv"',
        )
        self._only_with(
            "weight_scale", self.weight_init == "normal", 'has no effect with weight_init = "he"'
        )
        if self.kind == "conv":
            self._check_blocks()

    def _check_blocks(self) -> None:
        """The blocks as ConvNet reads them, against the images they will meet."""
        if not self.blocks:
            raise ConfigError(
                'model.blocks is required with kind = "conv": one [[model.blocks]] table per block'
            )
        try:
            check_blocks(parse_blocks(self.blocks), CIFAR_IMAGE)
        except InvalidInput as err:
            raise ConfigError(f"model.blocks: {err}") from None


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
    schedule: schedules.ScheduleKind = "epoch_decay"
    warmup_steps: int = 0
    step_size_epochs: int | None = None
    step_gamma: float = 0.1
    min_lr: float = 0.0

    def _validate(self) -> None:
        # distnet.schedules and distnet.optim own their settings' rules; this adds only
        # that a setting the chosen rule does not read keeps its default.
        try:
            schedules.check_settings(
                self.schedule, self.learning_rate, self.schedule_settings(), name=_optim_key
            )
            optim.validate_config(self.update_rule, self.rule_config(), prefix="optim.")
        except (schedules.ScheduleError, InvalidInput) as err:
            raise ConfigError(str(err)) from None
        uses = ", ".join(RULE_SETTINGS[self.update_rule]) or "only learning_rate"
        for name in sorted({s for settings in RULE_SETTINGS.values() for s in settings}):
            self._only_with(
                name,
                name in RULE_SETTINGS[self.update_rule],
                f'has no effect with update_rule = "{self.update_rule}" (it uses {uses})',
            )

    def rule_config(self) -> dict[str, float]:
        """The update rule's config dict: learning_rate and the rule's settings that are set."""
        settings = {name: getattr(self, name) for name in RULE_SETTINGS[self.update_rule]}
        return {"learning_rate": self.learning_rate} | {
            k: v for k, v in settings.items() if v is not None
        }

    def schedule_settings(self) -> dict[str, Any]:
        """The optional fields of distnet.schedules.Schedule that a job file sets here."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(schedules.Schedule)
            if f.name in _OPTIM_FIELDS
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
    # How a synchronous step (without backup workers) travels: "mesh" sends the parameters
    # and gradients over TCP between the actors, Ray carrying only small per-step calls (on
    # one node and on clusters alike); "tasks" submits Ray tasks whose arguments go through
    # the object store. Async, SSP, backup workers and elastic runs always use tasks.
    transport: Literal["mesh", "tasks"] = "mesh"
    # The mesh between actors that share a machine moves its bytes through shared memory
    # (one copy; the socket keeps the order and the failures); false: always by TCP, as
    # between machines.
    shared_memory: bool = True
    # Consecutive synchronous steps per actor call where steps go by the mesh (plain sync
    # training; never across an evaluation or a checkpoint). More spread Ray's per-call
    # cost, most of a small net's step; the steps of a call report its average step time.
    # Other runs (tasks, async, SSP, backup workers, elastic) take one step per call, so a
    # job that sets it runs unchanged with any of those.
    steps_per_call: int = 1
    # "overlapped": the delayed parameter update (docs/overlap.md): the workers compute
    # step t+1 on the parameters one step old while the servers apply step t's update.
    update: Literal["sync", "overlapped"] = "sync"
    # Threads of each parameter server's update rule; 0 = its node's cores, at most 4 (in
    # synchronous mode the workers wait while the servers update).
    server_threads: int = 0
    # Elastic training (docs/elastic.md): with max_workers set, each step is cut into
    # max_workers blocks (train.workers becomes max_workers: the fixed-size run it equals)
    # and between min_workers and max_workers live workers compute them; below min_workers
    # the run waits at most elastic_wait_s for workers, then stops leaving a checkpoint.
    min_workers: int | None = None
    max_workers: int | None = None
    elastic_wait_s: float = 300.0

    def _validate(self) -> None:
        self._check_elastic()
        for name in ("num_epochs", "batch_size", "workers", "servers", "eval_batch_size"):
            self._check(name, lambda v: v >= 1, ">= 1")
        for name in ("early_stopping_patience", "max_steps"):
            self._check(name, lambda v: v >= 1, ">= 1")
        for name in ("staleness", "backup_workers", "num_train_samples", "server_threads"):
            self._check(name, lambda v: v >= 0, ">= 0")
        self._check("topk_ratio", lambda v: 0 < v <= 1, "in (0, 1]")
        self._check("worker_cpus", lambda v: v > 0, "> 0")
        self._check(
            "batch_size", lambda v: v >= self.workers, f"at least train.workers ({self.workers})"
        )
        self._only_with("staleness", self.mode == "ssp", 'applies only with mode = "ssp"')
        self._only_with("backup_workers", self.mode == "sync", 'applies only with mode = "sync"')
        self._only_with(
            "topk_ratio", self.compression == "topk", 'applies only with compression = "topk"'
        )
        self._check("steps_per_call", lambda v: v >= 1, ">= 1")
        self._check_overlapped()

    def _check_overlapped(self) -> None:
        """The delayed update lives in the mesh step of plain synchronous training."""
        if self.update != "overlapped":
            return
        for name, ok, rule in (
            ("mode", self.mode == "sync", 'mode = "sync"'),
            ("transport", self.transport == "mesh", 'transport = "mesh"'),
            ("backup_workers", not self.backup_workers, "no backup workers"),
            ("max_workers", not self.elastic, "no elastic training (max_workers unset)"),
        ):
            if not ok:
                raise ConfigError(
                    f'train.update = "overlapped" needs {rule}, got '
                    f"train.{name} = {_show(getattr(self, name))}"
                )

    @property
    def elastic(self) -> bool:
        """Whether workers join and leave the run (max_workers set)."""
        return self.max_workers is not None

    def _check_elastic(self) -> None:
        """min/max_workers: 1 <= min <= max, sync mode without backup workers or "topk"
        (its residual is worker state); train.workers is max_workers or left unset."""
        self._only_with("min_workers", self.elastic, "applies only with train.max_workers set")
        self._only_with("elastic_wait_s", self.elastic, "applies only with train.max_workers set")
        if not self.elastic:
            return
        self._check("max_workers", lambda v: v >= 1, ">= 1")
        low = 1 if self.min_workers is None else self.min_workers
        self._check(
            "min_workers",
            lambda v: 1 <= v <= self.max_workers,
            f"in 1..train.max_workers ({self.max_workers})",
        )
        self._check("elastic_wait_s", lambda v: v > 0, "> 0")
        default = next(f.default for f in fields(self) if f.name == "workers")
        if self.workers not in (default, self.max_workers):
            raise ConfigError(
                f"train.workers = {self.workers} conflicts with train.max_workers = "
                f"{self.max_workers} (an elastic run cuts each step into max_workers blocks)"
            )
        for name, ok, rule in (
            ("mode", self.mode == "sync", 'mode = "sync"'),
            ("backup_workers", not self.backup_workers, "no backup workers"),
            ("compression", self.compression != "topk", 'compression "none" or "fp16"'),
        ):
            if not ok:
                raise ConfigError(
                    f"train.max_workers (elastic training) needs {rule}, got "
                    f"train.{name} = {_show(getattr(self, name))}"
                )
        object.__setattr__(self, "min_workers", low)
        object.__setattr__(self, "workers", self.max_workers)

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


_OPTIM_FIELDS = {f.name for f in fields(OptimConfig)}


def _optim_key(name: str) -> str:
    """How a job file calls a setting of distnet.schedules or distnet.optim."""
    return "optim.learning_rate" if name == "base_lr" else f"optim.{name}"
