"""Use what you trained: the model from a checkpoint, its scores on a split, predictions.

    model = load_model("checkpoints/two_layer")   # a checkpoint file, or a directory's latest
    scores = model.loss(X)                        # any CS231n model: (N, 10) class scores
    ev = evaluate("checkpoints/two_layer", "test")
    ev.accuracy, ev.per_class, ev.confusion       # confusion[true, predicted]
    pred = predict("checkpoints/two_layer", read_inputs(["cat.png"]))
    pred.labels, pred.probabilities

The model holds the best-validation parameters and the batchnorm statistics that go with
them (as the Solver and the trainer keep them), or the last ones when no epoch has ended.
Images are normalized with the training mean from the manifest of the dataset the job was
trained on (`data`, default: the job's data.path). Plain numpy: no ray here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from distnet.checkpoint import (
    CheckpointError,
    TrainState,
    latest_checkpoint,
    load_checkpoint,
)
from distnet.config import SECTIONS, ConfigError, JobConfig
from distnet.images import InputRow
from distnet.models import build_model
from distnet.remote_path import RemotePath, as_path


@dataclass(frozen=True)
class Trained:
    """A checkpoint's job and its model, ready to score."""

    path: Path | RemotePath
    job: JobConfig
    model: object  # TwoLayerNet | FullyConnectedNet with the best parameters


def find_checkpoint(path: str | os.PathLike) -> Path | RemotePath:
    """`path` itself if it is a file, else the newest checkpoint in that directory (a
    local path or a filesystem URI such as s3://bucket/checkpoints/job)."""
    path = as_path(path)
    if path.is_file():
        return path
    found = latest_checkpoint(path)
    if found is None:
        what = "holds no checkpoint" if path.is_dir() else "no such checkpoint or directory"
        raise CheckpointError(f"{path}: {what}")
    return found


def load_trained(path: str | os.PathLike) -> Trained:
    path = find_checkpoint(path)
    state = load_checkpoint(path)
    try:
        job = JobConfig.from_dict(_settings_we_know(state.config), source=f"{path} (its job)")
    except ConfigError as err:
        raise CheckpointError(f"{err}") from None
    return Trained(path, job, _model(job, state))


def _settings_we_know(config: dict) -> dict:
    """The checkpoint's job without run settings this distnet no longer has: a model
    outlives the knobs of the version that trained it. [model] is kept whole, so a network
    this version cannot build is still an error naming the key."""
    if not isinstance(config, dict):
        return config  # from_dict says what is wrong
    kept = {}
    for key, value in config.items():
        section = SECTIONS.get(key)
        if section is None or key == "model" or not isinstance(value, dict):
            kept[key] = value
        else:
            known = {f.name for f in fields(section)}
            kept[key] = {k: v for k, v in value.items() if k in known}
    return kept


def load_model(checkpoint: str | os.PathLike):
    """The checkpoint's model with its best parameters and batchnorm statistics."""
    return load_trained(checkpoint).model


def _model(job: JobConfig, state: TrainState):
    model = build_model(job.model)
    best = state.best_params is not None
    params = state.best_params if best else state.params
    # Statistics go with their parameters; a checkpoint may have kept none with the best.
    bn = state.best_bn_state if best and state.best_bn_state is not None else state.bn_state
    if params.shape != model.params.vector.shape:
        raise CheckpointError(
            f"checkpoint holds {params.size} parameters, its [model] "
            f"needs {model.params.vector.size}"
        )
    model.params.set_vector(params)
    model.set_bn_state(bn)
    return model


@dataclass(frozen=True)
class Evaluation:
    split: str
    label_names: list[str]
    confusion: np.ndarray  # int64 (C, C): rows the true class, columns the predicted one

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(self.count, 1))

    @property
    def per_class(self) -> np.ndarray:
        """The fraction of each class's images predicted as that class (NaN: none there)."""
        totals = self.confusion.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.diag(self.confusion) / totals


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    pairs = np.asarray(labels, np.int64) * num_classes + np.asarray(predicted, np.int64)
    return np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def evaluate(
    checkpoint: str | os.PathLike,
    split: str = "test",
    data: str | None = None,
    batch_size: int | None = None,
) -> Evaluation:
    """Score the checkpoint's model on a whole split of its dataset (or of `data`)."""
    from distnet.data.reader import load_manifest, open_split

    trained = load_trained(checkpoint)
    path = data or trained.job.data.path
    reader = open_split(path, split)
    label_names = load_manifest(path).label_names
    classes = len(label_names)
    step = batch_size or trained.job.train.eval_batch_size
    confusion = np.zeros((classes, classes), np.int64)
    for start in range(0, reader.num_rows, step):
        X, y = reader.batch(np.arange(start, min(start + step, reader.num_rows)))
        confusion += confusion_matrix(y, trained.model.loss(X).argmax(axis=1), classes)
    return Evaluation(split, label_names, confusion)


@dataclass(frozen=True)
class Predictions:
    names: list[str]
    label_names: list[str]
    probabilities: np.ndarray  # float (N, C), rows sum to 1

    @property
    def labels(self) -> list[str]:
        return [self.label_names[i] for i in self.probabilities.argmax(axis=1)]


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def predict(
    checkpoint: str | os.PathLike, rows: list[InputRow], data: str | None = None
) -> Predictions:
    """Class probabilities for `rows` (see distnet.images.read_inputs)."""
    from distnet.data.errors import DataError
    from distnet.data.reader import load_manifest

    trained = load_trained(checkpoint)
    path = data or trained.job.data.path
    try:
        manifest = load_manifest(path)
    except DataError as err:
        raise DataError(
            f"{err} (predict reads the label names and the training mean from "
            "the dataset the model was trained on; point --data at it)"
        ) from None
    mean = manifest.mean_array()
    X = np.stack(
        [row.values - mean if row.raw else row.values.astype(np.float32) for row in rows]
    ).astype(np.float32)
    scores = trained.model.loss(X).astype(np.float64)
    return Predictions([row.name for row in rows], manifest.label_names, softmax(scores))
