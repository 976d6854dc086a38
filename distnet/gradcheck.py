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


def eval_numerical_gradient(f, x, verbose=True, h=1e-5):
    """Gradient of the scalar function f at x (f takes x; x is perturbed in place)."""
    grad = np.zeros_like(x)
    for ix in np.ndindex(x.shape):
        old = x[ix]
        x[ix] = old + h
        f_plus = f(x)
        x[ix] = old - h
        f_minus = f(x)
        x[ix] = old
        grad[ix] = (f_plus - f_minus) / (2 * h)
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
        old = x[ix]
        x[ix] = old + h
        f_plus = f(x)
        x[ix] = old - h
        f_minus = f(x)
        x[ix] = old
        numerical = (f_plus - f_minus) / (2 * h)
        analytic = analytic_grad[ix]
        error = abs(numerical - analytic) / max(1e-8, abs(numerical) + abs(analytic))
        print(f"numerical: {numerical:f} analytic: {analytic:f}, relative error: {error:e}")
        errors.append(float(error))
    return errors


def check_model_gradients(model, X, y, h=1e-5) -> dict[str, float]:
    """Max relative error between model.loss's gradient and a numerical one, per parameter.

    The model must be float64 and deterministic across calls (seed its dropout). Each
    entry's error is |num - ana| / max(|num| + |ana|, floor). A centered difference resolves
    a derivative only to about eps * |loss| / h (the rounding of one loss value, ~5e-11
    here), so an entry that is tiny or exactly zero (a bias followed by batchnorm) would
    otherwise report its rounding noise as a large relative error; floor is that
    resolution / 1e-7, so noise-level discrepancies read as at most ~1e-7.
    """
    if model.dtype != np.float64:
        raise ValueError(f"gradient checks need a float64 model, got {model.dtype}")
    loss_value, grads = model.loss(X, y)
    grads = grads.copy()  # keep it: the loss calls below may reuse buffers
    floor = max(1e-8, np.finfo(np.float64).eps * max(1.0, abs(loss_value)) / h / 1e-7)

    def loss(_):
        return model.loss(X, y)[0]

    errors = {}
    for name in model.params:
        num = eval_numerical_gradient(loss, model.params[name], verbose=False, h=h)
        ana = grads[name]
        errors[name] = float(np.max(np.abs(num - ana) / np.maximum(floor, np.abs(num) + np.abs(ana)), initial=0.0))
    return errors
