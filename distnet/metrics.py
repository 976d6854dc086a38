"""TensorBoard logging and the progress bar: what a run shows while it runs.

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
  filters/<name>   the first conv layer's filters as an image grid        per epoch
  hparam/<metric> and the HParams plugin's session (this run)             at the end
  custom_scalars__config__: LAYOUT (Custom Scalars view)                  at the start
"""

from __future__ import annotations

import struct
import sys
import zlib
from dataclasses import dataclass

import numpy as np

from distnet.cs231n.vis_utils import visualize_grid


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
    """Writes one run's TensorBoard event file into `logdir` (event_log.py: never blocks,
    never imports PyTorch; a failed disk is one warning and the end of logging)."""

    def __init__(self, logdir: str, log_every_steps: int = 1, histograms: bool = True):
        from distnet.event_log import EventLog, tensorboardx

        self.logdir = logdir
        self.every = log_every_steps
        self.histograms = histograms
        self._summary = tensorboardx().summary
        self.log = EventLog(logdir)
        self.last_step = 0
        self.log.add(self._summary.custom_scalars(LAYOUT), 0)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One event holding every value of `values` (tag -> number) at `step`."""
        Summary = self._summary.Summary
        self.last_step = max(self.last_step, step)
        self.log.add(
            Summary(
                value=[Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()]
            ),
            step,
        )

    def text(self, step: int, tag: str, text: str) -> None:
        """A line of text at `step` (TensorBoard's Text tab)."""
        if self.log.active:
            self.log.add(self._summary.text(tag, text), step)

    def histogram(self, step: int, tag: str, values: np.ndarray) -> None:
        self.log.add(self._summary.histogram(tag, np.asarray(values, dtype=float), bins=64), step)

    def step(self, s: StepStats) -> None:
        if s.step % self.every or not self.log.active:
            return
        values = {
            "train/loss": s.loss,
            "train/learning_rate": s.learning_rate,
            "train/grad_norm": s.grad_norm,
            "train/samples_per_s": s.samples_per_s,
            "time/step_s": s.step_s,
            "time/compute_max_s": max(s.compute_s),
            "time/compute_mean_s": float(np.mean(s.compute_s)),
            "time/server_update_s": s.server_update_s,
            "time/wait_s": s.wait_s,
            **{f"worker/compute_s/{i}": c for i, c in enumerate(s.compute_s)},
            "train/bytes_per_step": s.grad_bytes + s.param_bytes,
            "train/grad_bytes_per_step": s.grad_bytes,
            **{f"worker/steps_per_s/{i}": r for i, r in enumerate(s.steps_per_s or ())},
        }
        if s.dropped is not None:
            values["train/dropped_gradients"] = s.dropped
        if s.staleness:
            values["train/staleness_max"] = max(s.staleness)
            self.histogram(s.step, "train/staleness", np.asarray(s.staleness))
        self.scalars(s.step, values)

    def epoch(self, step: int, accuracies: dict[str, float], weights: dict[str, np.ndarray]):
        """Accuracies, weight histograms and (conv nets) the first conv layer's filters:
        the first (F, C, HH, WW) array of `weights`, which are in the parameters' order."""
        self.scalars(step, {f"accuracy/{split}": acc for split, acc in accuracies.items()})
        if self.histograms and self.log.active:
            for name, values in weights.items():
                self.histogram(step, f"weights/{name}", values)
        filters = next(((name, w) for name, w in weights.items() if np.ndim(w) == 4), None)
        if filters is not None and self.log.active:
            self.image(step, f"filters/{filters[0]}", filter_grid(filters[1]))
        self.log.flush()

    def image(self, step: int, tag: str, pixels: np.ndarray) -> None:
        """uint8 (H, W, 1 or 3) pixels as a PNG image event."""
        Summary = self._summary.Summary
        height, width, channels = pixels.shape
        image = Summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=png(pixels)
        )
        self.log.add(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def hparams(self, hparams: dict, metrics: dict[str, float]) -> None:
        """The run's settings and final metrics for TensorBoard's HParams view, in the run
        itself (the run is the session; its metrics are the scalars `hparam/<name>`)."""
        step = self.last_step
        flat = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()
        }
        tagged = {f"hparam/{k}": v for k, v in metrics.items()}
        for summary in self._summary.hparams(flat, tagged):  # experiment, start, end
            self.log.add(summary, step)
        self.scalars(step, tagged)

    def close(self) -> None:
        self.log.close()


# TensorBoard's Custom Scalars view: related curves in one chart (tags are regexes).
LAYOUT = {
    "training": {
        "loss": ["Multiline", ["train/loss"]],
        "accuracy": ["Multiline", ["accuracy/train", "accuracy/val"]],
        "throughput (samples/s)": ["Multiline", ["train/samples_per_s"]],
    },
    "time per step (s)": {
        "split": [
            "Multiline",
            ["time/step_s", "time/compute_max_s", "time/server_update_s", "time/wait_s"],
        ],
        "compute per worker": ["Multiline", [r"worker/compute_s/\d+"]],
    },
}


def filter_grid(filters: np.ndarray, min_side: int = 192) -> np.ndarray:
    """Conv filters (F, C, HH, WW) as the assignment's picture (visualize_grid: each filter
    rescaled to 0..255, in a square grid), uint8 (H, W, 3) for RGB filters, (H, W, 1) with
    one grey tile per channel otherwise; pixels repeated so the grid is at least `min_side`
    wide (3x3 filters would be a few dots)."""
    F, C, HH, WW = filters.shape
    tiles = filters.transpose(0, 2, 3, 1) if C == 3 else filters.reshape(F * C, HH, WW, 1)
    grid = visualize_grid(tiles)
    zoom = max(1, -(-min_side // max(grid.shape[:2])))
    grid = np.repeat(np.repeat(grid, zoom, axis=0), zoom, axis=1)
    return np.round(grid).astype(np.uint8)


def png(pixels: np.ndarray) -> bytes:
    """uint8 (H, W, 1 or 3) as a PNG file: tensorboardX's image summary needs Pillow, an
    optional extra, and PNG is only zlib and three chunks."""
    height, width, channels = pixels.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = np.zeros((height, 1 + width * channels), np.uint8)  # filter byte 0: none
    rows[:, 1:] = pixels.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, {1: 0, 3: 2}[channels], 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes()))
        + chunk(b"IEND", b"")
    )


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

    return tqdm(total=total, disable=not enabled, unit="step", file=sys.stderr, dynamic_ncols=True)
