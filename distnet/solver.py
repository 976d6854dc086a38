"""Single-process training loop (the CS231n assignment-2 Solver, Python 3).

    solver = Solver(model, data, update_rule="sgd", optim_config={"learning_rate": 1e-3},
                    lr_decay=0.95, num_epochs=10, batch_size=100, print_every=100)
    solver.train()          # model.params now holds the best-validation parameters

data: dict with X_train, y_train, X_val, y_val. The model needs `params` and
`loss(X, y=None)`. Minibatches are sampled with replacement, as in the assignment, from a
generator seeded by the `seed` keyword (default: drawn from NumPy's global generator, so
`np.random.seed` still makes a notebook run reproducible).

flush_denormals (default True) sets flush-to-zero in the thread that creates the Solver
and in the one that calls train() (distnet.fpenv): Adam's second moments decay into
denormal floats within a few thousand steps, which made a numpy Adam loop 1.7x slower;
values below 1.2e-38 change nothing in training, and distnet's Ray actors do the same,
so single-process and distributed runs share the arithmetic. The setting stays on in that
thread after training; pass flush_denormals=False to keep IEEE gradual underflow.
"""

from __future__ import annotations

import inspect
import math
import numbers

import numpy as np

from distnet import optim
from distnet.atomic import atomic_write
from distnet.early_stopping import no_improvement
from distnet.errors import InvalidInput, TrainingDiverged
from distnet.fpenv import flush_denormals
from distnet.params import FlatParams

_DEFAULTS = {
    "update_rule": "sgd",
    "optim_config": None,
    "lr_decay": 1.0,
    "batch_size": 100,
    "num_epochs": 10,
    "num_train_samples": 1000,
    "num_val_samples": None,
    "checkpoint_name": None,
    "print_every": 10,
    "verbose": True,
    "seed": None,
    "lr_schedule": None,  # callable: 0-based iteration -> learning rate (distnet.schedules)
    "patience": None,  # stop after this many epochs without a better validation accuracy
    "flush_denormals": True,
}


def _takes_grads_out(model) -> bool:
    try:
        return "grads_out" in inspect.signature(model.loss).parameters
    except (TypeError, ValueError):  # a callable without a signature
        return False


class Solver:
    def __init__(self, model, data, **kwargs):
        unknown = sorted(set(kwargs) - set(_DEFAULTS))
        if unknown:
            raise InvalidInput(f"Unrecognized arguments {', '.join(unknown)}")
        settings = {**_DEFAULTS, **kwargs}
        missing = [k for k in ("X_train", "y_train", "X_val", "y_val") if k not in data]
        if missing:
            raise InvalidInput(f"data is missing {', '.join(missing)}")
        self.model = model
        self.X_train, self.y_train = data["X_train"], data["y_train"]
        self.X_val, self.y_val = data["X_val"], data["y_val"]
        if len(self.X_train) != len(self.y_train) or len(self.X_val) != len(self.y_val):
            raise InvalidInput("X_train/y_train and X_val/y_val must have the same lengths")
        if len(self.X_train) == 0:
            raise InvalidInput("X_train is empty")

        self.optim_config = dict(settings["optim_config"] or {})
        self.lr_decay = float(settings["lr_decay"])
        self.batch_size = settings["batch_size"]
        self.num_epochs = settings["num_epochs"]
        self.num_train_samples = settings["num_train_samples"]
        self.num_val_samples = settings["num_val_samples"]
        self.checkpoint_name = settings["checkpoint_name"]
        self.print_every = settings["print_every"]
        self.verbose = settings["verbose"]
        for name, least in (("batch_size", 1), ("print_every", 1), ("num_epochs", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
                raise InvalidInput(f"{name} must be an integer >= {least}, got {value!r}")
        if not (math.isfinite(self.lr_decay) and self.lr_decay > 0):
            raise InvalidInput(f"lr_decay must be a positive number, got {self.lr_decay!r}")
        self.lr_schedule = settings["lr_schedule"]
        if self.lr_schedule is not None and not callable(self.lr_schedule):
            raise InvalidInput("lr_schedule must be a function of the iteration")
        if self.lr_schedule is not None and self.lr_decay != 1.0:
            raise InvalidInput("lr_schedule and lr_decay exclude each other")
        self.patience = settings["patience"]
        if self.patience is not None and (
            isinstance(self.patience, bool)
            or not isinstance(self.patience, numbers.Integral)
            or self.patience < 1
        ):
            raise InvalidInput(f"patience must be an integer >= 1, got {self.patience!r}")

        rule = settings["update_rule"]
        if callable(rule):
            self.update_rule = rule
        elif rule in optim.RULES:
            optim.validate_config(rule, self.optim_config)
            self.update_rule = optim.RULES[rule]
        else:
            raise InvalidInput(f'Invalid update_rule "{rule}" (known: {", ".join(optim.RULES)})')
        self.update_rule_name = getattr(self.update_rule, "__name__", str(rule))

        seed = settings["seed"]
        self._rng = np.random.default_rng(np.random.randint(2**31) if seed is None else seed)
        self.flush_denormals = bool(settings["flush_denormals"])
        if self.flush_denormals:
            flush_denormals()
        # A model whose loss can write into a given gradient buffer (FullyConnectedNet)
        # gets the same one every step instead of a fresh one.
        self._grads = (
            model.params.empty_like()
            if _takes_grads_out(model) and isinstance(model.params, FlatParams)
            else None
        )
        self._reset()

    def _reset(self) -> None:
        self.epoch = 0
        self.best_val_acc = 0.0
        self.best_params = {}
        self.loss_history: list[float] = []
        self.train_acc_history: list[float] = []
        self.val_acc_history: list[float] = []
        # Each parameter keeps its own optimizer state, as in the assignment.
        self.optim_configs = {p: dict(self.optim_config) for p in self.model.params}

    def _step(self, iteration: int) -> None:
        """One minibatch gradient step; `iteration` (1-based) names it in errors."""
        if self.lr_schedule is not None:
            lr = float(self.lr_schedule(iteration - 1))
            for config in self.optim_configs.values():
                config["learning_rate"] = lr
        batch = self._rng.integers(len(self.X_train), size=self.batch_size)
        X, y = self.X_train[batch], self.y_train[batch]
        if self._grads is not None and self._grads.same_layout(self.model.params):
            loss, grads = self.model.loss(X, y, grads_out=self._grads)
        else:
            loss, grads = self.model.loss(X, y)
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"loss is {loss} at iteration {iteration} (epoch {self.epoch + 1}); stopping. "
                "Try a smaller learning rate or weight_scale."
            )
        self.loss_history.append(loss)
        for p, w in self.model.params.items():
            next_w, self.optim_configs[p] = self.update_rule(w, grads[p], self.optim_configs[p])
            self.model.params[p] = next_w

    def _save_checkpoint(self) -> None:
        """Write <checkpoint_name>_epoch_<n>.npz atomically (fsynced), without pickle."""
        if self.checkpoint_name is None:
            return
        path = f"{self.checkpoint_name}_epoch_{self.epoch}.npz"
        arrays = {f"params/{k}": np.asarray(v) for k, v in self.model.params.items()}
        arrays.update(
            update_rule=np.str_(self.update_rule_name),
            lr_decay=np.float64(self.lr_decay),
            batch_size=np.int64(self.batch_size),
            epoch=np.int64(self.epoch),
            loss_history=np.asarray(self.loss_history, dtype=np.float64),
            train_acc_history=np.asarray(self.train_acc_history, dtype=np.float64),
            val_acc_history=np.asarray(self.val_acc_history, dtype=np.float64),
        )
        with atomic_write(path) as f:
            np.savez(f, allow_pickle=False, **arrays)

    def check_accuracy(self, X, y, num_samples=None, batch_size=100) -> float:
        """Fraction of correct predictions on (a random subsample of num_samples of) X."""
        N = len(X)
        if num_samples is not None and N > num_samples:
            subset = self._rng.integers(N, size=num_samples)
            X, y, N = X[subset], y[subset], num_samples
        predictions = [
            np.argmax(self.model.loss(X[start : start + batch_size]), axis=1)
            for start in range(0, N, batch_size)
        ]
        if not predictions:
            return 0.0
        return float(np.mean(np.concatenate(predictions) == y))

    def train(self) -> None:
        """Run the optimization; at the end model.params holds the best-validation ones."""
        if self.flush_denormals:  # this thread may not be the one that built the Solver
            flush_denormals()
        iterations_per_epoch = max(len(self.X_train) // self.batch_size, 1)
        num_iterations = self.num_epochs * iterations_per_epoch
        for t in range(num_iterations):
            self._step(t + 1)
            if self.verbose and t % self.print_every == 0:
                print(f"(Iteration {t + 1} / {num_iterations}) loss: {self.loss_history[-1]:f}")
            epoch_end = (t + 1) % iterations_per_epoch == 0
            if epoch_end:
                self.epoch += 1
                for config in self.optim_configs.values():
                    if "learning_rate" in config:
                        config["learning_rate"] *= self.lr_decay
            if t == 0 or t == num_iterations - 1 or epoch_end:
                self._record_accuracies()
            if epoch_end and no_improvement(self.val_acc_history, self.patience):
                break
        if self.best_params:
            self.model.params = self.best_params

    def _record_accuracies(self) -> None:
        train_acc = self.check_accuracy(
            self.X_train, self.y_train, num_samples=self.num_train_samples
        )
        val_acc = self.check_accuracy(self.X_val, self.y_val, num_samples=self.num_val_samples)
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        self._save_checkpoint()
        if self.verbose:
            print(
                f"(Epoch {self.epoch} / {self.num_epochs}) "
                f"train acc: {train_acc:f}; val_acc: {val_acc:f}"
            )
        if val_acc > self.best_val_acc or not self.best_params:
            self.best_val_acc = val_acc
            params = self.model.params
            self.best_params = (
                params.copy()
                if isinstance(params, FlatParams)
                else {k: np.array(v, copy=True) for k, v in params.items()}
            )
