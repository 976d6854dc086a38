"""Fully connected layers, ReLU, dropout and the losses (see distnet.layers for the protocol)."""

from __future__ import annotations

import numpy as np

from distnet.errors import InvalidInput


def affine_forward(x, w, b):
    """out = x.reshape(N, D) @ w + b.

    x: (N, d_1, ..., d_k) with D = d_1 * ... * d_k;  w: (D, M);  b: (M,).
    Returns out (N, M) and cache (x, w).
    """
    out = x.reshape(x.shape[0], -1) @ w
    out += b
    return out, (x, w)


def affine_backward(dout, cache, *, input_grad=True, out=None):
    """dout: (N, M). Returns dx (shaped like x), dw (D, M), db (M,).

    input_grad=False skips dx (returned as None): nothing needs the gradient of a network's
    input, and it costs as much as dw. `out=(dw, db)` writes into given arrays, e.g. views
    of a flat gradient buffer.
    """
    x, w = cache
    dw, db = out if out is not None else (None, None)
    dw = np.dot(x.reshape(x.shape[0], -1).T, dout, out=dw)
    db = np.sum(dout, axis=0, out=db)
    dx = (dout @ w.T).reshape(x.shape) if input_grad else None
    return dx, dw, db


def relu_forward(x):
    """out = max(x, 0), any shape. The cache is `out` (out > 0 exactly where x > 0)."""
    out = np.maximum(x, 0)
    return out, out


def relu_backward(dout, cache):
    # Multiplying by the boolean mask is ~6x faster than np.where(cache > 0, dout, 0).
    return dout * (cache > 0)


def dropout_forward(x, dropout_param):
    """Inverted dropout: each unit is dropped with probability p, survivors scaled by 1/(1-p).

    dropout_param: 'p' (drop probability in [0, 1)), 'mode' ('train' / 'test'; test is
    the identity), optional 'seed' (int or sequence of non-negative ints): with it the mask
    is a pure function of the seed; without it the mask seed is drawn from NumPy's global
    generator, so `np.random.seed(...)` still makes a notebook reproducible.
    """
    p, mode = float(dropout_param["p"]), dropout_param.get("mode", "train")
    if not 0 <= p < 1:
        raise InvalidInput(f"dropout probability p must be in [0, 1), got {p}")
    if mode == "test":
        return x, None
    if mode != "train":
        raise InvalidInput(f"dropout mode must be 'train' or 'test', got {mode!r}")
    seed = dropout_param.get("seed")
    rng = np.random.default_rng(np.random.randint(2**31) if seed is None else seed)
    draw_dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    keep = rng.random(x.shape, dtype=draw_dtype) >= p
    scale = 1 / (1 - p)  # a Python float: keeps x's dtype
    out = x * keep
    out *= scale
    return out, (keep, scale)


def dropout_backward(dout, cache):
    if cache is None:  # test mode
        return dout
    keep, scale = cache
    dx = dout * keep
    dx *= scale
    return dx


def check_labels(y, num_samples: int, num_classes: int) -> np.ndarray:
    """Labels must be integers in [0, num_classes), one per sample."""
    y = np.asarray(y)
    if y.shape != (num_samples,):
        raise InvalidInput(f"labels y have shape {y.shape}, expected ({num_samples},)")
    if not np.issubdtype(y.dtype, np.integer):
        raise InvalidInput(f"labels y must be integers, got dtype {y.dtype}")
    if num_samples == 0:
        raise InvalidInput("cannot compute a loss on an empty batch")
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise InvalidInput(f"label {bad} is out of range for {num_classes} classes")
    return y


def softmax_loss(x, y):
    """Mean cross-entropy of softmax(x). x: (N, C) scores; y: (N,) labels in [0, C).

    Returns (loss: float, dx (N, C)). Stable for any finite scores: the row maximum is
    subtracted before exponentiating.
    """
    N, C = x.shape
    y = check_labels(y, N, C)
    rows = np.arange(N)
    shifted = x - x.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    sums = probs.sum(axis=1, keepdims=True)
    loss = (float(np.log(sums).sum()) - float(shifted[rows, y].sum())) / N
    probs /= sums
    probs[rows, y] -= 1
    probs /= N
    return loss, probs


def svm_loss(x, y):
    """Mean multiclass hinge loss (margin 1). x: (N, C); y: (N,). Returns (loss, dx)."""
    N, C = x.shape
    y = check_labels(y, N, C)
    rows = np.arange(N)
    margins = x - x[rows, y][:, None]
    margins += 1
    np.maximum(margins, 0, out=margins)
    margins[rows, y] = 0
    loss = float(margins.sum()) / N
    dx = (margins > 0).astype(x.dtype)
    dx[rows, y] -= dx.sum(axis=1)
    dx /= N
    return loss, dx
