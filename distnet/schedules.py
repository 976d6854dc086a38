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
``lr_decay`` next to a cosine schedule and believe it has an effect.
"""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass, fields
from typing import Literal, get_args

from distnet.errors import DistnetError

ScheduleKind = Literal["epoch_decay", "step", "cosine", "onecycle"]

# The optional fields each kind reads; any other optional field must stay at its default.
_FIELDS_USED = {
    "epoch_decay": {"lr_decay"},
    "step": {"step_size_epochs", "step_gamma"},
    "cosine": {"warmup_steps", "min_lr"},
    "onecycle": {"warmup_steps", "min_lr", "div_factor"},
}
_ALWAYS_USED = {"kind", "base_lr", "steps_per_epoch", "total_steps"}


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
        if self.kind not in get_args(ScheduleKind):
            raise ScheduleError(
                f"schedule kind {self.kind!r} is not one of {', '.join(get_args(ScheduleKind))}"
            )
        _check_number("base_lr", self.base_lr, low=0.0)
        _check_int("steps_per_epoch", self.steps_per_epoch, low=1)
        _check_int("total_steps", self.total_steps, low=1)
        _check_number("lr_decay", self.lr_decay, low=0.0)
        _check_int("warmup_steps", self.warmup_steps, low=0)
        if self.step_size_epochs is not None:
            _check_int("step_size_epochs", self.step_size_epochs, low=1)
        _check_number("step_gamma", self.step_gamma, low=0.0)
        _check_number("min_lr", self.min_lr, low=0.0, strict=False)
        _check_number("div_factor", self.div_factor, low=0.0)
        if self.div_factor < 1:
            raise ScheduleError(f"div_factor must be >= 1, got {self.div_factor!r}")

        used = _ALWAYS_USED | _FIELDS_USED[self.kind]
        for f in fields(self):
            if f.name not in used and getattr(self, f.name) != f.default:
                raise ScheduleError(
                    f"{f.name}={getattr(self, f.name)!r} has no effect on a {self.kind!r} "
                    f"schedule (it uses {', '.join(sorted(_FIELDS_USED[self.kind]))})"
                )

        if self.kind == "step" and self.step_size_epochs is None:
            raise ScheduleError("a 'step' schedule needs step_size_epochs")
        if self.kind in ("cosine", "onecycle"):
            if self.min_lr > self.base_lr:
                raise ScheduleError(
                    f"min_lr={self.min_lr!r} is above base_lr={self.base_lr!r}"
                )
            if self.warmup_steps >= self.total_steps:
                raise ScheduleError(
                    f"warmup_steps={self.warmup_steps} leaves no steps to anneal: "
                    f"it must be below total_steps={self.total_steps}"
                )
        if self.kind == "onecycle" and self.warmup_steps == 0:
            raise ScheduleError(
                "a 'onecycle' schedule needs warmup_steps > 0 (Smith uses ~30% of total_steps)"
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


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ScheduleError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ScheduleError(f"{name} must be >= {low}, got {value}")


def _check_number(name: str, value: object, low: float, strict: bool = True) -> None:
    """A finite real number above `low` (or at least `low` when not strict)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ScheduleError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ScheduleError(f"{name} must be finite, got {value!r}")
    if value < low or (strict and value == low):
        raise ScheduleError(f"{name} must be {'>' if strict else '>='} {low}, got {value!r}")
