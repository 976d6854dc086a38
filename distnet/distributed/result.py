"""What a training run hands back: per-step events while it runs, a TrainResult at the end."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # this module stays importable without Ray
    from distnet.distributed.group import ActorGroup


@dataclass
class StepEvent:
    """Passed to `train(on_step=...)` after each completed step.

    In async/SSP mode a step is N applied gradients (a synchronous-equivalent step), and
    `gradients` lists them in the order the servers applied them.
    """

    step: int
    loss: float
    group: ActorGroup  # the run's actors (e.g. `group.worker_pids()`)
    gradients: list[tuple[int, int]] = field(default_factory=list)  # (worker, local step)
    dropped: int = 0  # late gradients left out of this step (backup workers)


@dataclass
class TrainResult:
    """What `train` returns: the Solver's histories plus the run's summary figures.

    `params`/`bn_state` are the kept (best validation) parameters, as the Solver swaps them
    in at the end; `test_acc` is measured with them. `final_params` are the last ones.
    `applied_gradients` and `dropped_gradients` count worker gradients (N per synchronous
    step); `bytes_per_step` is what a step moves on the wire: gradients to the servers
    (`grad_bytes_per_step`, after compression) plus parameters read by the workers.
    `worker_steps` (async/SSP) is how many gradients of each worker the servers applied.
    """

    train_acc: float
    val_acc: float
    test_acc: float
    best_val_acc: float
    final_loss: float
    steps: int
    epochs: int
    samples_per_s: float
    wall_s: float
    logdir: str
    checkpoint: str
    mode: str
    transport: str  # how the synchronous steps travelled: "mesh" or "tasks"
    applied_gradients: int
    dropped_gradients: int
    bytes_per_step: float
    grad_bytes_per_step: float
    worker_steps: list[int]
    loss_history: list[float] = field(repr=False)
    train_acc_history: list[float] = field(repr=False)
    val_acc_history: list[float] = field(repr=False)
    params: np.ndarray = field(repr=False)
    bn_state: np.ndarray = field(repr=False)
    final_params: np.ndarray = field(repr=False)

    def summary(self) -> dict:
        """The JSON-able figures (no histories, no arrays)."""
        skip = {
            "loss_history",
            "train_acc_history",
            "val_acc_history",
            "params",
            "bn_state",
            "final_params",
        }
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip
        }
