"""Training checkpoints: atomic, pickle-free `.npz` files.

A checkpoint is `DIR/ckpt-<step, 8 digits>.npz`, a plain numpy archive that loads with
`allow_pickle=False`: the arrays (parameters, optimizer state, batchnorm statistics, best
parameters, histories) are entries of their own, everything else (step, epoch, the job
config, scalar optimizer state such as Adam's `t`) is one JSON document stored as a uint8
array. It is written to a temporary file in the same directory, fsynced and renamed into
place, so a crash at any moment leaves either the old set of checkpoints or the new one,
never a half-written file under a checkpoint name. DIR may also be a filesystem URI
(`s3://bucket/run`, `gs://`, `hdfs://`), where one upload is the atomic write
(distnet.remote_path), so checkpoints outlive the node that wrote them.

    path = save_checkpoint("checkpoints/job", state, keep=3)
    state = load_checkpoint(latest_checkpoint("checkpoints/job"))
    state = load_latest_checkpoint("checkpoints/job", ModelSpec.like(params, bn_state))

Loading checks the file (zip CRCs, format, types) and, given a ModelSpec, that it fits the
model it is meant for: shapes, dtypes, finite values, steps in range. A damaged newest
checkpoint is moved aside by `load_latest_checkpoint`, which continues from the newest
intact one and says so; a checkpoint that does not fit the model is an error.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distnet.errors import DistnetError
from distnet.remote_path import RemotePath, as_path, readable, replace_atomically

FORMAT = "distnet-checkpoint"
VERSION = 1
_NAME = re.compile(r"ckpt-(\d{8,})\.npz")
# Array entries of the archive; optimizer state and histories get a prefix per key.
_OPT, _HISTORY, _META = "opt_state/", "history/", "meta"
# Arrays that may be None; lagged_params: the overlapped update's p(step) (docs/overlap.md).
_OPTIONAL = ("best_params", "best_bn_state", "lagged_params")


class CheckpointError(DistnetError):
    """A checkpoint cannot be written, or the file is missing, truncated or corrupted."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint that reads intact but holds invalid values or does not fit the model
    it is loaded for."""


# Far beyond any real run (10^12 steps), far below where int64 step arithmetic overflows.
MAX_STEP = 10**12
_FLOAT32 = np.dtype(np.float32)  # the models' dtype


@dataclass(frozen=True)
class ModelSpec:
    """What a checkpoint must hold to continue a given model: `param_size` parameters and
    `bn_size` batchnorm statistics of `dtype`, at most `max_step` steps (the job's total;
    None: only MAX_STEP)."""

    param_size: int
    bn_size: int
    dtype: np.dtype = _FLOAT32
    max_step: int | None = None

    @classmethod
    def like(
        cls, params: np.ndarray, bn_state: np.ndarray, max_step: int | None = None
    ) -> ModelSpec:
        """The spec of a model whose flat parameters and statistics look like these."""
        return cls(params.size, bn_state.size, params.dtype, max_step)

    def check(self, state: TrainState, where: str) -> None:
        """Raise CheckpointMismatch, naming `where` and the first field that does not fit."""
        for problem in self._problems(state):
            raise CheckpointMismatch(f"{where}: {problem}")

    def _problems(self, state: TrainState):
        limit = MAX_STEP if self.max_step is None else self.max_step
        if not state.step <= limit:
            yield f"step {state.step} is beyond this job's {limit} steps"
        if not state.epoch <= state.step:
            yield f"epoch {state.epoch} is larger than step {state.step}"
        arrays = {
            "params": (state.params, self.param_size),
            "bn_state": (state.bn_state, self.bn_size),
            "best_params": (state.best_params, self.param_size),
            "best_bn_state": (state.best_bn_state, self.bn_size),
            "lagged_params": (state.lagged_params, self.param_size),
        }
        arrays |= {
            f"opt_state[{key!r}]": (value, self.param_size)
            for key, value in state.opt_state.items()
            if _is_array(value)
        }
        for name, (value, size) in arrays.items():
            if value is None:  # no best parameters yet, or not an overlapped run
                continue
            if value.shape != (size,) or value.dtype != self.dtype:
                yield (
                    f"{name} is {value.dtype} of shape {value.shape}, this model needs "
                    f"{self.dtype} of shape ({size},)"
                )
            elif not np.isfinite(value).all():
                yield f"{name} holds NaN or infinite values"
        for key, value in state.opt_state.items():
            if not _is_array(value) and not math.isfinite(value):
                yield f"opt_state[{key!r}] is {value}"
        if not (state.best_val_acc == -1.0 or 0.0 <= state.best_val_acc <= 1.0):
            yield f"best_val_acc {state.best_val_acc} is not an accuracy"
        for key, values in state.history.items():
            if not all(math.isfinite(v) for v in values):
                yield f"history {key} holds NaN or infinite values"
            elif "acc" in key and not all(0.0 <= v <= 1.0 for v in values):
                yield f"history {key} holds values outside [0, 1]"


@dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped."""

    step: int
    epoch: int
    params: np.ndarray  # the flat parameter vector
    opt_state: dict[str, np.ndarray | float | int]  # e.g. {"m": ..., "v": ..., "t": 5}
    bn_state: np.ndarray  # flat batchnorm running statistics (empty without batchnorm)
    best_params: np.ndarray | None
    best_val_acc: float
    history: dict[str, list[float]]  # loss_history, train_acc_history, val_acc_history ...
    config: dict  # JobConfig.to_dict()
    extra: dict[str, int | float | str] = field(default_factory=dict)
    best_bn_state: np.ndarray | None = None  # batchnorm statistics that go with best_params
    # train.update = "overlapped": the parameters the next step's gradients are computed on
    lagged_params: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError unless every field has a type and shape a checkpoint can hold."""
        for name in ("step", "epoch"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or not 0 <= value <= MAX_STEP
            ):
                raise ValueError(
                    f"TrainState.{name} must be an integer in [0, {MAX_STEP}], got {value!r}"
                )
        arrays = {"params": self.params, "bn_state": self.bn_state}
        arrays |= {name: value for name in _OPTIONAL if (value := getattr(self, name)) is not None}
        arrays |= {f"opt_state[{k!r}]": v for k, v in self.opt_state.items() if _is_array(v)}
        for name, value in arrays.items():
            if not isinstance(value, np.ndarray) or value.dtype.hasobject:
                raise ValueError(f"TrainState.{name} must be a numeric array, got {value!r:.80}")
        if self.params.ndim != 1:
            raise ValueError(f"TrainState.params must be flat, got shape {self.params.shape}")
        for best, current in (
            ("best_params", "params"),
            ("best_bn_state", "bn_state"),
            ("lagged_params", "params"),
        ):
            best_value, value = getattr(self, best), getattr(self, current)
            if best_value is not None and (
                best_value.shape != value.shape or best_value.dtype != value.dtype
            ):
                raise ValueError(f"TrainState.{best} must have the shape and dtype of {current}")
        for key, value in self.opt_state.items():
            if not _is_array(value) and not isinstance(value, (int, float, np.number)):
                raise ValueError(f"TrainState.opt_state[{key!r}] must be an array or a number")


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray)


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path | RemotePath:
    return as_path(directory) / f"ckpt-{step:08d}.npz"


def list_checkpoints(directory: str | os.PathLike) -> list[Path | RemotePath]:
    """The directory's checkpoints, oldest (lowest step) first; temporary files excluded.
    A directory is a local path or a filesystem URI (s3://, gs://, hdfs://, file://)."""
    directory = as_path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.fullmatch(p.name))]
    return [path for _, path in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike) -> Path | RemotePath | None:
    """The checkpoint with the highest step in `directory`, or None when there is none."""
    checkpoints = list_checkpoints(directory)
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(
    directory: str | os.PathLike, state: TrainState, keep: int
) -> Path | RemotePath:
    """Write `state` atomically as DIR/ckpt-<step>.npz, then delete all but the `keep`
    newest checkpoints (never the one just written). Returns the new file's path."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    directory = as_path(directory)
    path = checkpoint_path(directory, int(state.step))
    state.validate()  # fields may have been reassigned since construction
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with replace_atomically(path) as f:
            np.savez(f, allow_pickle=False, **_to_arrays(state))
    except OSError as err:
        raise CheckpointError(f"{path}: cannot write checkpoint: {err.strerror or err}") from None
    for old in list_checkpoints(directory)[:-keep]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


def _to_arrays(state: TrainState) -> dict[str, np.ndarray]:
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "step": int(state.step),
        "epoch": int(state.epoch),
        "best_val_acc": float(state.best_val_acc),
        # numpy scalars become Python numbers: JSON keeps ints and floats (repr) exactly.
        "opt_scalars": {
            k: v.item() if isinstance(v, np.generic) else v
            for k, v in state.opt_state.items()
            if not _is_array(v)
        },
        "history_keys": list(state.history),
        "config": state.config,
        "extra": state.extra,
    }
    arrays = {
        _META: np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        "params": state.params,
        "bn_state": state.bn_state,
    }
    arrays |= {name: value for name in _OPTIONAL if (value := getattr(state, name)) is not None}
    arrays |= {_OPT + k: v for k, v in state.opt_state.items() if _is_array(v)}
    # float64 holds float32 values exactly, and a long history is cheaper as an array.
    arrays |= {_HISTORY + k: np.asarray(v, dtype=np.float64) for k, v in state.history.items()}
    return arrays


def load_checkpoint(path: str | os.PathLike, expected: ModelSpec | None = None) -> TrainState:
    """Read a checkpoint written by save_checkpoint; never unpickles anything.

    CheckpointError when the file is missing, truncated or corrupted; CheckpointMismatch
    when it reads but holds invalid values or, given `expected`, does not fit that model."""
    path = as_path(path)
    try:
        with np.load(readable(path), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(arrays.pop(_META).tobytes().decode())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: corrupted or truncated checkpoint ({err})") from None
    try:
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError("not a distnet checkpoint")
        if meta["version"] != VERSION:
            raise ValueError(f"format version {meta['version']}, this distnet reads {VERSION}")
        opt_state = {k[len(_OPT) :]: v for k, v in arrays.items() if k.startswith(_OPT)}
        state = TrainState(
            step=meta["step"],
            epoch=meta["epoch"],
            params=arrays["params"],
            opt_state=opt_state | meta["opt_scalars"],
            bn_state=arrays["bn_state"],
            best_params=arrays.get("best_params"),
            best_val_acc=meta["best_val_acc"],
            history={k: arrays[_HISTORY + k].tolist() for k in meta["history_keys"]},
            config=meta["config"],
            extra=meta["extra"],
            best_bn_state=arrays.get("best_bn_state"),
            lagged_params=arrays.get("lagged_params"),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointMismatch(f"{path}: invalid checkpoint ({err})") from None
    if expected is not None:
        expected.check(state, str(path))
    return state


def load_latest_checkpoint(
    directory: str | os.PathLike,
    expected: ModelSpec | None = None,
    warn: Callable[[str], None] | None = None,
) -> TrainState | None:
    """The newest checkpoint in `directory` that reads intact (None when there is none).

    Newer ones that are truncated or corrupted are renamed to `<name>.damaged`, out of the
    way of later saves and pruning, and reported through `warn` (default: one line each on
    stderr). One that reads but does not fit `expected` is an error (CheckpointMismatch):
    older ones would not fit either. CheckpointError when every checkpoint is damaged."""
    damaged = []
    for path in reversed(list_checkpoints(directory)):
        try:
            state = load_checkpoint(path, expected)
        except CheckpointMismatch:
            raise
        except CheckpointError as err:
            aside = path.with_name(path.name + ".damaged")
            try:
                path.replace(aside)
                damaged.append(f"{err}; moved aside to {aside.name}")
            except OSError:
                damaged.append(str(err))
            continue
        for problem in damaged:
            (warn or _warn)(f"{problem}; continuing from {path.name}")
        return state
    if damaged:
        raise CheckpointError(
            f"no intact checkpoint in {directory}: {damaged[0]}"
            + (f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else "")
        )
    return None


def _warn(message: str) -> None:
    print(f"distnet: warning: {message}", file=sys.stderr)
