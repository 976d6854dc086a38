"""TensorBoard logging (tensorboardX) and the progress bar: what a run shows while it runs.

Tags:
  train/loss, train/learning_rate, train/samples_per_s, train/grad_norm   per step
  time/step_s, time/compute_max_s, time/compute_mean_s, time/server_update_s,
  time/wait_s                                                             per step
  worker/compute_s/<i>                                                    per step, stragglers
  train/bytes_per_step, train/grad_bytes_per_step                         per step, on the wire
  train/dropped_gradients                                                 per step, backup workers
  train/staleness (histogram), train/staleness_max, worker/steps_per_s/<i>
                                                                          per step, async and SSP
  accuracy/train, accuracy/val                                            per epoch
  weights/<name>                                                          per epoch histograms
  hparams                                                                 at the end
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np


@dataclass
class StepStats:
    """One synchronous step as the driver saw it (async/SSP: N applied gradients)."""

    step: int
    loss: float
    learning_rate: float
    grad_norm: float
    samples_per_s: float
    step_s: float
    compute_s: list[float]  # per worker
    server_update_s: float
    grad_bytes: int = 0  # gradients sent to the servers
    param_bytes: int = 0  # parameters read by the workers
    dropped: int | None = None  # late gradients left out (backup workers only)
    staleness: list[int] | None = None  # of each applied gradient (async/SSP only)
    steps_per_s: list[float] | None = None  # per worker (async/SSP only)

    @property
    def wait_s(self) -> float:
        """Step time not spent computing or updating: transfer, scheduling, stragglers."""
        return max(0.0, self.step_s - max(self.compute_s) - self.server_update_s)


class RunLogger:
    """Writes one run's TensorBoard event files into `logdir`."""

    def __init__(self, logdir: str, log_every_steps: int = 1, histograms: bool = True):
        from tensorboardX import SummaryWriter

        self.logdir = logdir
        self.every = log_every_steps
        self.histograms = histograms
        self.writer = SummaryWriter(logdir=logdir)

    def step(self, s: StepStats) -> None:
        if s.step % self.every:
            return
        w, t = self.writer, s.step
        w.add_scalar("train/loss", s.loss, t)
        w.add_scalar("train/learning_rate", s.learning_rate, t)
        w.add_scalar("train/grad_norm", s.grad_norm, t)
        w.add_scalar("train/samples_per_s", s.samples_per_s, t)
        w.add_scalar("time/step_s", s.step_s, t)
        w.add_scalar("time/compute_max_s", max(s.compute_s), t)
        w.add_scalar("time/compute_mean_s", float(np.mean(s.compute_s)), t)
        w.add_scalar("time/server_update_s", s.server_update_s, t)
        w.add_scalar("time/wait_s", s.wait_s, t)
        for i, c in enumerate(s.compute_s):
            w.add_scalar(f"worker/compute_s/{i}", c, t)
        w.add_scalar("train/bytes_per_step", s.grad_bytes + s.param_bytes, t)
        w.add_scalar("train/grad_bytes_per_step", s.grad_bytes, t)
        if s.dropped is not None:
            w.add_scalar("train/dropped_gradients", s.dropped, t)
        if s.staleness:
            w.add_histogram("train/staleness", np.asarray(s.staleness, dtype=float), t)
            w.add_scalar("train/staleness_max", max(s.staleness), t)
        for i, rate in enumerate(s.steps_per_s or ()):
            w.add_scalar(f"worker/steps_per_s/{i}", rate, t)

    def epoch(self, step: int, accuracies: dict[str, float], weights: dict[str, np.ndarray]):
        for split, acc in accuracies.items():
            self.writer.add_scalar(f"accuracy/{split}", acc, step)
        if self.histograms:
            for name, values in weights.items():
                self.writer.add_histogram(f"weights/{name}", values, step)
        self.writer.flush()

    def hparams(self, hparams: dict, metrics: dict[str, float]) -> None:
        flat = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                for k, v in hparams.items()}
        self.writer.add_hparams(flat, {f"hparam/{k}": v for k, v in metrics.items()},
                                name="hparams")

    def close(self) -> None:
        self.writer.close()


def flat_hparams(config: dict) -> dict:
    """A job's settings as TensorBoard hparams: {"section.key": value}, None left out."""
    flat = {}
    for section, values in config.items():
        if isinstance(values, dict):
            flat.update({f"{section}.{k}": v for k, v in values.items() if v is not None})
        else:
            flat[section] = values
    return flat


def progress_bar(total: int, enabled: bool):
    """The run's progress bar, on stderr (stdout may carry the --json summary)."""
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="step", file=sys.stderr,
                dynamic_ncols=True)
