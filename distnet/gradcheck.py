"""Numerical gradients by centered differences, for checking analytic backward passes.

Use float64 everywhere: with float32 the rounding error of f swamps the difference.
The functions perturb `x` in place and restore it, so `x` may be a view into a model's
flat parameters (that is how `check_model_gradients` works).
"""

from __future__ import annotations

import numpy as np


def rel_error(x, y) -> float:
    """Largest elementwise |x - y| / max(1e-8, |x| + |y|)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def _centered_difference(f, x, ix, h) -> float:
    old = x[ix]
    x[ix] = old + h
    f_plus = f(x)
    x[ix] = old - h
    f_minus = f(x)
    x[ix] = old
    return (f_plus - f_minus) / (2 * h)


def eval_numerical_gradient(f, x, verbose=True, h=1e-5):
    """Gradient of the scalar function f at x (f takes x; x is perturbed in place)."""
    grad = np.zeros_like(x)
    for ix in np.ndindex(x.shape):
        grad[ix] = _centered_difference(f, x, ix, h)
        if verbose:
            print(ix, grad[ix])
    return grad


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """Gradient of sum(f(x) * df) at x, for array-valued f: what a backward pass returns
    given the upstream gradient df."""
    grad = np.zeros_like(x)
    for ix in np.ndindex(x.shape):
        old = x[ix]
        x[ix] = old + h
        f_plus = np.array(f(x), copy=True)
        x[ix] = old - h
        f_minus = np.array(f(x), copy=True)
        x[ix] = old
        grad[ix] = np.sum((f_plus - f_minus) * df) / (2 * h)
    return grad


def grad_check_sparse(f, x, analytic_grad, num_checks=10, h=1e-5, seed=None) -> list[float]:
    """Compare analytic_grad with centered differences at num_checks random entries of x.

    Prints one line per entry (as the assignment does) and returns the relative errors.
    """
    rng = np.random.default_rng(seed)
    errors = []
    for _ in range(num_checks):
        ix = tuple(int(rng.integers(m)) for m in x.shape)
        numerical = _centered_difference(f, x, ix, h)
        analytic = analytic_grad[ix]
        error = abs(numerical - analytic) / max(1e-8, abs(numerical) + abs(analytic))
        print(f"numerical: {numerical:f} analytic: {analytic:f}, relative error: {error:e}")
        errors.append(float(error))
    return errors


def _one_sided_differences(f, x, ix, h, f_x) -> tuple[float, float]:
    """Second-order forward and backward differences: each looks at one side of x only."""
    old = x[ix]
    values = {}
    for k in (-2, -1, 1, 2):
        x[ix] = old + k * h
        values[k] = f(x)
    x[ix] = old
    forward = (-3 * f_x + 4 * values[1] - values[2]) / (2 * h)
    backward = (3 * f_x - 4 * values[-1] + values[-2]) / (2 * h)
    return forward, backward


def check_model_gradients(model, X, y, h=1e-5, max_checks=None, seed=0) -> dict[str, float]:
    """Max relative error between model.loss's gradient and a numerical one, per parameter.

    The model (any distnet model, fully connected or conv: FlatParams,
    `loss(..., grads_out=)`) must be float64 and deterministic across calls (seed its
    dropout). max_checks: check at most that many
    entries of each parameter, drawn at random (with `seed`); None checks them all.

    Each entry's error is |num - ana| / max(|num| + |ana|, floor). A centered difference
    resolves a derivative only to about eps * |loss| / h (the rounding of one loss value,
    ~5e-11 here), so an entry that is tiny or exactly zero (a bias followed by batchnorm)
    would otherwise report its rounding noise as a large error; floor is that resolution
    / 1e-7, so noise-level discrepancies read as about 1e-7.

    A ReLU input within h of zero (or two max-pool inputs within h of each other) puts a
    kink under the centered difference. It lies on one side of x, so an entry that reads
    above 1e-7 is also compared with second-order
    one-sided differences (resolution 4x coarser, floor 4x higher) and keeps the smallest
    error: a wrong analytic gradient disagrees with all three.
    """
    if model.dtype != np.float64:
        raise ValueError(f"gradient checks need a float64 model, got {model.dtype}")
    loss_value, grads = model.loss(X, y)
    grads = grads.copy()  # keep it: the loss calls below may reuse buffers
    floor = max(1e-8, np.finfo(np.float64).eps * max(1.0, abs(loss_value)) / h / 1e-7)
    rng = np.random.default_rng(seed)
    scratch = grads.zeros_like()  # the gradients of the loss calls below are not needed

    def loss(_):
        return model.loss(X, y, grads_out=scratch)[0]

    errors = {}
    for name in model.params:
        x = model.params[name]
        if max_checks is None or x.size <= max_checks:
            entries = list(np.ndindex(x.shape))
        else:
            picks = rng.choice(x.size, size=max_checks, replace=False)
            entries = [np.unravel_index(i, x.shape) for i in picks]
        num = np.array([_centered_difference(loss, x, ix, h) for ix in entries])
        ana = np.array([grads[name][ix] for ix in entries])
        error = np.abs(num - ana) / np.maximum(floor, np.abs(num) + np.abs(ana))
        for k in np.flatnonzero(error > 1e-7):
            for estimate in _one_sided_differences(loss, x, entries[k], h, loss_value):
                one_sided = abs(estimate - ana[k]) / max(4 * floor, abs(estimate) + abs(ana[k]))
                error[k] = min(error[k], one_sided)
        errors[name] = float(np.max(error, initial=0.0))
    return errors
