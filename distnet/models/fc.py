"""Fully connected networks with a softmax loss (the CS231n assignment-2 models).

    {affine - [batchnorm] - relu - [dropout]} x (L - 1) - affine - softmax

`model.params` is a `FlatParams` (named views into one flat buffer), and
`model.loss(X, y)` returns `(loss, grads)` with `grads` in the same layout, so
`grads.vector` is the whole gradient as one array. `model.loss(X)` returns the scores.
What all models share (parameters, regularization, batchnorm state) is in base.py.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence

import numpy as np

from distnet.errors import InvalidInput
from distnet.layer_utils import (
    affine_bn_relu_backward,
    affine_bn_relu_forward,
    affine_relu_backward,
    affine_relu_forward,
)
from distnet.layers import (
    affine_backward,
    affine_forward,
    dropout_backward,
    dropout_forward,
    softmax_loss,
)
from distnet.models.base import (
    Model,
    batchnorm_param,
    check_dtype,
    check_weight_scale,
    positive_int,
    weight_noise,
)
from distnet.params import FlatParams


class FullyConnectedNet(Model):
    """A network with any number of hidden layers (none: a linear softmax classifier).

    hidden_dims: sizes of the hidden layers; dropout: probability of dropping a hidden unit
    (0 = no dropout); seed: dropout seed (non-negative int, or a sequence of them such as
    (seed, epoch, step, worker)); layer i draws its mask from (seed..., i), so a seed makes
    every mask deterministic. init_seed: seed for the initial weights (None draws them from
    NumPy's global generator, as the assignment does).
    """

    def __init__(
        self,
        hidden_dims: Sequence[int],
        input_dim: int = 3 * 32 * 32,
        num_classes: int = 10,
        dropout: float = 0,
        use_batchnorm: bool = False,
        reg: float = 0.0,
        weight_scale: float = 1e-2,
        dtype=np.float32,
        seed=None,
        init_seed: int | None = None,
    ):
        hidden = [positive_int(f"hidden_dims[{i}]", d) for i, d in enumerate(hidden_dims)]
        dims = [
            positive_int("input_dim", input_dim),
            *hidden,
            positive_int("num_classes", num_classes),
        ]
        if not 0 <= dropout < 1:
            raise InvalidInput(f"dropout must be in [0, 1), got {dropout!r}")
        check_weight_scale(weight_scale)
        self.input_dim, self.num_classes = dims[0], dims[-1]
        self.input_shape = (self.input_dim,)  # of one sample
        self.num_layers = len(dims) - 1
        self.use_batchnorm = bool(use_batchnorm)
        self.use_dropout = dropout > 0
        self.dtype = check_dtype(dtype)
        self.reg = reg

        shapes: dict[str, tuple[int, ...]] = {}
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(dims), start=1):
            shapes[f"W{i}"], shapes[f"b{i}"] = (fan_in, fan_out), (fan_out,)
            if self.use_batchnorm and i < self.num_layers:
                shapes[f"gamma{i}"], shapes[f"beta{i}"] = (fan_out,), (fan_out,)
        self._params = FlatParams(shapes, self.dtype)
        rng = np.random.default_rng(init_seed) if init_seed is not None else None
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(dims), start=1):
            self._params[f"W{i}"] = weight_scale * weight_noise(rng, (fan_in, fan_out))
            if f"gamma{i}" in self._params:
                self._params[f"gamma{i}"][:] = 1

        self.dropout_param: dict = {"mode": "train", "p": dropout}
        if seed is not None:
            self.dropout_param["seed"] = seed
        self.bn_params = [batchnorm_param(d, self.dtype) for d in hidden if self.use_batchnorm]

    # --- forward and backward ---------------------------------------------------------

    def _flatten_input(self, X) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim < 2 or math.prod(X.shape[1:]) != self.input_dim:
            raise InvalidInput(
                f"X has shape {X.shape}, but the model takes (N, {self.input_dim}) or any "
                f"(N, d1, d2, ...) with d1 * d2 * ... = {self.input_dim}"
            )
        if X.dtype.kind not in "biuf":
            raise InvalidInput(f"X must be numeric, got dtype {X.dtype}")
        return X.reshape(X.shape[0], -1).astype(self.dtype, copy=False)

    def loss(self, X, y=None, *, grads_out: FlatParams | None = None):
        """Scores (N, num_classes) without y; with y, (loss, grads) in the params layout.

        grads_out: an optional FlatParams of the same layout to write the gradient into
        (saves allocating a fresh gradient buffer per step).
        """
        X = self._flatten_input(X)
        self._set_mode("test" if y is None else "train")
        params, L = self._params, self.num_layers

        h, caches = X, []
        for i in range(1, L):
            if self.use_batchnorm:
                h, cache = affine_bn_relu_forward(
                    h,
                    params[f"W{i}"],
                    params[f"b{i}"],
                    params[f"gamma{i}"],
                    params[f"beta{i}"],
                    self.bn_params[i - 1],
                )
            else:
                h, cache = affine_relu_forward(h, params[f"W{i}"], params[f"b{i}"])
            drop_cache = None
            if self.use_dropout:
                h, drop_cache = dropout_forward(h, self._layer_dropout_param(i))
            caches.append((cache, drop_cache))
        scores, last_cache = affine_forward(h, params[f"W{L}"], params[f"b{L}"])
        if y is None:
            return scores

        loss, dscores = softmax_loss(scores, y)
        self.forward_end = time.perf_counter()
        grads = self._gradient_buffer(grads_out)
        # Only hidden layers need dx: the gradient of the network input is never used.
        dh, _, _ = affine_backward(
            dscores, last_cache, input_grad=L > 1, out=(grads[f"W{L}"], grads[f"b{L}"])
        )
        for i in range(L - 1, 0, -1):
            cache, drop_cache = caches[i - 1]
            if self.use_dropout:
                dh = dropout_backward(dh, drop_cache)
            out = (grads[f"W{i}"], grads[f"b{i}"])
            if self.use_batchnorm:
                dh, _, _, dgamma, dbeta = affine_bn_relu_backward(
                    dh, cache, input_grad=i > 1, out=out
                )
                grads[f"gamma{i}"], grads[f"beta{i}"] = dgamma, dbeta
            else:
                dh, _, _ = affine_relu_backward(dh, cache, input_grad=i > 1, out=out)

        return self._regularize(loss, grads, L), grads


class TwoLayerNet(FullyConnectedNet):
    """affine - relu - affine - softmax, with parameters W1, b1, W2, b2.

    float64 by default, as the assignment's TwoLayerNet (its notebook checks scores to 1e-6
    and the loss to 1e-10); FullyConnectedNet's default is float32, as the assignment's.
    Jobs choose the dtype in [model] (float32 by default) and pass it here.
    """

    def __init__(
        self,
        input_dim: int = 3 * 32 * 32,
        hidden_dim: int = 100,
        num_classes: int = 10,
        weight_scale: float = 1e-3,
        reg: float = 0.0,
        dtype=np.float64,
        init_seed: int | None = None,
    ):
        super().__init__(
            [hidden_dim],
            input_dim=input_dim,
            num_classes=num_classes,
            weight_scale=weight_scale,
            reg=reg,
            dtype=dtype,
            init_seed=init_seed,
        )
