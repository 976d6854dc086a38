"""Normalisation layers (see distnet.layers for the protocol)."""

from __future__ import annotations

import numpy as np

from distnet.errors import InvalidInput


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization over the batch axis.

    x: (N, D); gamma, beta: (D,). bn_param: 'mode' ('train' or 'test', required), 'eps'
    (1e-5), 'momentum' (0.9), 'running_mean' / 'running_var' ((D,), zeros / ones when
    missing). Train mode normalises with the batch statistics and updates the running ones
    in bn_param: running = momentum * running + (1 - momentum) * batch. Test mode uses the
    running statistics.
    """
    mode = bn_param.get("mode")
    eps = float(bn_param.get("eps", 1e-5))
    momentum = float(bn_param.get("momentum", 0.9))
    D = x.shape[1]
    running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.ones(D, dtype=x.dtype))
    if mode == "train":
        mean = x.mean(axis=0)
        xhat = x - mean
        var = _column_dot(xhat, xhat) / x.shape[0]
        inv_std = 1 / np.sqrt(var + eps)
        xhat *= inv_std
        out = xhat * gamma
        out += beta
        bn_param["running_mean"] = momentum * running_mean + (1 - momentum) * mean
        bn_param["running_var"] = momentum * running_var + (1 - momentum) * var
        return out, (xhat, gamma, inv_std)
    if mode == "test":
        scale = gamma / np.sqrt(running_var + eps)
        out = x * scale
        out += beta - running_mean * scale
        return out, None
    raise InvalidInput(f"batchnorm mode must be 'train' or 'test', got {mode!r}")


def batchnorm_backward(dout, cache):
    """dout: (N, D). Returns dx (N, D), dgamma (D,), dbeta (D,) (train-mode forward only).

    The compact form of the chain rule through mean and variance:
    dx = gamma * inv_std * (dout - sum(dout) / N - xhat * sum(dout * xhat) / N).
    """
    xhat, gamma, inv_std = cache
    N = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = _column_dot(dout, xhat)
    dx = xhat * (dgamma / N)
    dx += dbeta / N
    np.subtract(dout, dx, out=dx)
    dx *= gamma * inv_std
    return dx, dgamma, dbeta


def _column_dot(a, b):
    """sum(a * b, axis=0) without the (N, D) temporary (2-3x faster)."""
    return np.einsum("ij,ij->j", a, b)
