"""Learning-rate schedules as pure functions of the update step.

A `Schedule` maps the 0-based step of an update to the learning rate for that update and
holds no state, so a resumed job or a restarted parameter server gets exactly the rate the
uninterrupted run would have used:

    >>> s = Schedule("cosine", base_lr=0.1, steps_per_epoch=100, total_steps=1000,
    ...              warmup_steps=9)
    >>> s(0), s(9), s(1000)
    (0.01, 0.1, 0.0)

Kinds (e = step // steps_per_epoch is the 0-based epoch of the step):

- ``epoch_decay``: ``base_lr * lr_decay ** e`` -- the CS231n Solver's per-epoch decay,
  the default (``lr_decay=1.0`` is a constant rate).
- ``step``: ``base_lr * step_gamma ** (e // step_size_epochs)``.
- ``cosine``: linear warm-up, then cosine annealing to ``min_lr`` (nanoGPT's ``get_lr``)::

      step <  W:  base_lr * (step + 1) / (W + 1)
      step >= W:  min_lr + (base_lr - min_lr) * (1 + cos(pi * p)) / 2,
                  p = min(1, (step - W) / (total_steps - W))

  so the rate is never 0 during warm-up, is ``base_lr`` at step W and ``min_lr`` from
  ``total_steps`` on.
- ``onecycle``: Smith's one-cycle policy with cosine phases (as PyTorch's ``OneCycleLR``)::

      start = base_lr / div_factor
      step <  W:  cos_anneal(start, base_lr, step / W)
      step >= W:  cos_anneal(base_lr, min_lr, p)       (p as for cosine)
      cos_anneal(a, b, f) = b + (a - b) * (1 + cos(pi * f)) / 2

  Smith takes W around 30% of ``total_steps``.

Fields that a kind does not use must keep their defaults, so a job file cannot set, say,
``lr_decay`` next to a cosine schedule and believe it has an effect. `check_settings`
holds these rules and the ranges; job files (distnet.config) are checked by it too.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from distnet.errors import DistnetError

# The kinds, and the optional fields each reads; any other optional field must stay at its
# default.
FIELDS_USED = {
    "epoch_decay": {"lr_decay"},
    "step": {"step_size_epochs", "step_gamma"},
    "cosine": {"warmup_steps", "min_lr"},
    "onecycle": {"warmup_steps", "min_lr", "div_factor"},
}
ScheduleKind = Literal[tuple(FIELDS_USED)]
_REQUIRED = ("kind", "base_lr", "steps_per_epoch", "total_steps")


class ScheduleError(DistnetError, ValueError):
    """A schedule argument is missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class Schedule:
    """The learning rate as a function of the 0-based update step (see the module doc)."""

    kind: ScheduleKind
    base_lr: float
    steps_per_epoch: int
    total_steps: int
    lr_decay: float = 1.0
    warmup_steps: int = 0
    step_size_epochs: int | None = None
    step_gamma: float = 0.1
    min_lr: float = 0.0
    div_factor: float = 25.0

    def __post_init__(self) -> None:
        optional = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _REQUIRED}
        check_settings(self.kind, self.base_lr, optional)
        _check("steps_per_epoch", self.steps_per_epoch, lambda v: v >= 1, ">= 1", integer=True)
        _check("total_steps", self.total_steps, lambda v: v >= 1, ">= 1", integer=True)
        if self.kind in ("cosine", "onecycle") and self.warmup_steps >= self.total_steps:
            raise ScheduleError(
                f"warmup_steps={self.warmup_steps} leaves no steps to anneal: "
                f"it must be below total_steps={self.total_steps}"
            )

    def __call__(self, step: int) -> float:
        """The learning rate for the update at 0-based `step`."""
        step = operator.index(step)  # numpy integers welcome, floats are a bug
        if step < 0:
            raise ScheduleError(f"step must be >= 0, got {step}")
        epoch = step // self.steps_per_epoch
        if self.kind == "epoch_decay":
            return float(self.base_lr * self.lr_decay**epoch)
        if self.kind == "step":
            return float(self.base_lr * self.step_gamma ** (epoch // self.step_size_epochs))

        warmup = self.warmup_steps
        if step < warmup:
            if self.kind == "cosine":
                return float(self.base_lr * (step + 1) / (warmup + 1))
            return _cos_anneal(self.base_lr / self.div_factor, self.base_lr, step / warmup)
        progress = min(1.0, (step - warmup) / (self.total_steps - warmup))
        return _cos_anneal(self.base_lr, self.min_lr, progress)


def _cos_anneal(start: float, end: float, fraction: float) -> float:
    """Half a cosine from `start` (fraction 0) to `end` (fraction 1)."""
    return float(end + (start - end) * (1.0 + math.cos(math.pi * fraction)) / 2.0)


def check_settings(
    kind: str, base_lr: float, settings: Mapping[str, Any], name: Callable[[str], str] = str
) -> None:
    """Raise ScheduleError unless a `kind` schedule from `base_lr` can take `settings` (some
    of its optional fields; the others keep their defaults): a value out of range, a field
    the kind does not read set anyway, or one it needs left out. Nothing here depends on
    the length of the run, so a job file is checked before it is known. `name` spells a
    field in the messages (a job file calls base_lr "optim.learning_rate")."""
    if kind not in FIELDS_USED:
        raise ScheduleError(f"schedule kind {kind!r} is not one of {', '.join(FIELDS_USED)}")
    _check(name("base_lr"), base_lr, lambda v: v > 0, "> 0")
    ranges = {
        "lr_decay": (lambda v: 0 < v <= 1, "in (0, 1]", False),
        "warmup_steps": (lambda v: v >= 0, ">= 0", True),
        "step_size_epochs": (lambda v: v >= 1, ">= 1", True),
        "step_gamma": (lambda v: 0 < v <= 1, "in (0, 1]", False),
        "min_lr": (lambda v: 0 <= v < base_lr, f"in [0, {name('base_lr')})", False),
        "div_factor": (lambda v: v >= 1, ">= 1", False),
    }
    for field, value in settings.items():
        ok, rule, integer = ranges[field]
        if value is not None:  # step_size_epochs may be unset
            _check(name(field), value, ok, rule, integer)
    uses = ", ".join(sorted(FIELDS_USED[kind] & set(settings)))
    for field, value in settings.items():
        if field not in FIELDS_USED[kind] and value != _DEFAULTS[field]:
            raise ScheduleError(
                f'{name(field)} = {value!r} has no effect with schedule = "{kind}" (it uses {uses})'
            )
    if kind == "step" and settings.get("step_size_epochs") is None:
        raise ScheduleError(f'{name("step_size_epochs")} is required with schedule = "step"')
    if kind == "onecycle" and not settings.get("warmup_steps"):
        raise ScheduleError(
            f'{name("warmup_steps")} must be > 0 with schedule = "onecycle" '
            "(Smith uses ~30% of the steps)"
        )


_DEFAULTS = {f.name: f.default for f in fields(Schedule)}


def _check(
    name: str, value: object, ok: Callable[[Any], bool], rule: str, integer: bool = False
) -> None:
    """`value` must be a finite number (an integer if `integer`) that satisfies `ok`."""
    if isinstance(value, bool) or not isinstance(
        value, numbers.Integral if integer else numbers.Real
    ):
        raise ScheduleError(
            f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}"
        )
    if not math.isfinite(value):
        raise ScheduleError(f"{name} must be finite, got {value!r}")
    if not ok(value):
        raise ScheduleError(f"{name} must be {rule}, got {value!r}")
