"""What every distnet model shares, whatever its layers.

A model holds its parameters as one `FlatParams` (named views into one flat buffer) and
`loss(X, y, grads_out=None)` returns `(loss, grads)` in the same layout, or the scores
without y. Servers, checkpoints and compression see only `params.vector`,
`get_bn_state()` / `set_bn_state()` (every batchnorm layer's running mean then running
variance, as one vector) and `dropout_param['seed']`, so they work for any model.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

from distnet.errors import InvalidInput
from distnet.params import FlatParams

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_dtype(dtype) -> np.dtype:
    if np.dtype(dtype) not in DTYPES:
        raise InvalidInput(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
    return np.dtype(dtype)


def check_weight_scale(weight_scale) -> None:
    if not (
        isinstance(weight_scale, numbers.Real) and math.isfinite(weight_scale) and weight_scale >= 0
    ):
        raise InvalidInput(f"weight_scale must be a non-negative number, got {weight_scale!r}")


def weight_noise(rng: np.random.Generator | None, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal weights from `rng`, or from NumPy's global generator (None) as the
    assignment draws them, so `np.random.seed(...)` reproduces a notebook."""
    return rng.standard_normal(shape) if rng is not None else np.random.randn(*shape)


def batchnorm_param(size: int, dtype: np.dtype) -> dict:
    """A batchnorm layer's bn_param; its running statistics exist from the start, so the
    batchnorm state of a model has a fixed size."""
    return {
        "mode": "train",
        "running_mean": np.zeros(size, dtype),
        "running_var": np.ones(size, dtype),
    }


class Model:
    """Base of the models: subclasses set `_params`, `dtype`, `reg`, `input_shape` (of one
    sample), `num_classes`, `bn_params` (one bn_param per batchnorm layer, in order) and
    `dropout_param`, and define `loss`."""

    use_batchnorm = False
    use_groupnorm = False
    use_dropout = False
    _params: FlatParams
    dtype: np.dtype
    bn_params: list[dict]
    dropout_param: dict
    # time.perf_counter() when loss() last had its loss, before the backward pass: where a
    # worker's --trace timeline splits a step's forward from its backward.
    forward_end: float = 0.0

    # --- parameters and state ---------------------------------------------------------

    @property
    def params(self) -> FlatParams:
        return self._params

    @params.setter
    def params(self, new) -> None:
        """Adopt a FlatParams of the same layout, or copy a mapping of all parameters in."""
        if isinstance(new, FlatParams) and new.same_layout(self._params):
            self._params = new
            return
        if not isinstance(new, Mapping) or set(new) != set(self._params):
            names = sorted(new) if isinstance(new, Mapping) else type(new).__name__
            raise InvalidInput(f"params must have exactly {list(self._params)}, got {names}")
        for name in self._params:
            self._params[name] = new[name]

    @property
    def reg(self) -> float:
        return self._reg

    @reg.setter
    def reg(self, value: float) -> None:
        # A Python float, so reg * W never upcasts a float32 array.
        value = float(value)
        if not (math.isfinite(value) and value >= 0):
            raise InvalidInput(f"reg must be a non-negative number, got {value!r}")
        self._reg = value

    def get_bn_state(self) -> np.ndarray:
        """Running mean then running variance of each batchnorm layer, as one vector."""
        parts = [bp[key] for bp in self.bn_params for key in ("running_mean", "running_var")]
        return (
            np.concatenate(parts).astype(self.dtype, copy=False)
            if parts
            else np.zeros(0, self.dtype)
        )

    def set_bn_state(self, state) -> None:
        state = np.asarray(state)
        expected = sum(2 * bp["running_mean"].size for bp in self.bn_params)
        if state.shape != (expected,):
            raise InvalidInput(f"batchnorm state has shape {state.shape}, expected ({expected},)")
        offset = 0
        for bp in self.bn_params:
            for key in ("running_mean", "running_var"):
                size = bp[key].size
                bp[key] = state[offset : offset + size].astype(self.dtype)  # a copy
                offset += size

    # --- helpers of loss ----------------------------------------------------------------

    def _set_mode(self, mode: str) -> None:
        """'train' or 'test' for every dropout and batchnorm layer."""
        self.dropout_param["mode"] = mode
        for bn_param in self.bn_params:
            bn_param["mode"] = mode

    def _layer_dropout_param(self, layer: int, **settings) -> dict:
        """The dropout_param of layer `layer`: its mask seed is (seed..., layer), so layers
        draw different masks and each is a pure function of the model's seed."""
        seed = self.dropout_param.get("seed")
        if seed is None:
            return {**self.dropout_param, **settings} if settings else self.dropout_param
        seed = [*seed, layer] if isinstance(seed, (tuple, list)) else [seed, layer]
        return {**self.dropout_param, **settings, "seed": seed}

    def _gradient_buffer(self, grads_out: FlatParams | None) -> FlatParams:
        if grads_out is None:
            return self._params.empty_like()  # every entry is written by loss
        if not grads_out.same_layout(self._params):
            raise InvalidInput("grads_out must have the layout and dtype of model.params")
        return grads_out

    def _regularize(self, loss: float, grads: FlatParams, num_weights: int) -> float:
        """Add the L2 penalty 0.5 * reg * |W|^2 of W1 ... W{num_weights} (not biases or
        normalization parameters) to loss and its gradient to grads."""
        if self._reg:
            for i in range(1, num_weights + 1):
                W = self._params[f"W{i}"]
                loss += 0.5 * self._reg * float(np.vdot(W, W))
                grads[f"W{i}"] += self._reg * W
        return loss
