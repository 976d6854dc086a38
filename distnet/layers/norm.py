"""Normalisation layers: batch, layer and group norm (see distnet.layers for the protocol).

Each standardises x, xhat = (x - mean) / sqrt(var + eps), and then scales and shifts each
feature (axis 1: D features, or C channels): out = gamma * xhat + beta. Only the axes of
the statistics differ. Batchnorm takes them per feature over everything else (the batch,
and H, W in the spatial form); layer and group norm per sample, over all its features or
over each of G groups of channels. One core per family serves every rank.
"""

from __future__ import annotations

import numpy as np

from distnet.errors import InvalidInput


def _per_feature(v, ndim):
    """v (D,) or already (1, D, 1, ...) as a view that broadcasts along axis 1 of x."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _sum_product(a, b, axes):
    """sum(a * b, axis=axes, keepdims=True) without the a * b temporary (2-3x faster)."""
    letters = "abcdefgh"[: a.ndim]
    kept = "".join(c for i, c in enumerate(letters) if i not in axes)
    total = np.einsum(f"{letters},{letters}->{kept}", a, b)
    return total.reshape([1 if i in axes else n for i, n in enumerate(a.shape)])


def _standardize(x, axes, eps):
    """xhat = (x - mean) / sqrt(var + eps) over axes; returns xhat, mean, var, inv_std
    (the last three keep the reduced axes as size 1)."""
    mean = x.mean(axis=axes, keepdims=True)
    xhat = x - mean
    var = _sum_product(xhat, xhat, axes) / (x.size // mean.size)
    inv_std = 1 / np.sqrt(var + eps)
    xhat *= inv_std
    return xhat, mean, var, inv_std


def _standardize_backward(dxhat, xhat, scale, sum_dxhat, sum_dxhat_xhat):
    """dx for xhat = (x - mean) * inv_std, given dxhat and its sums over the same axes.

    The compact chain rule through mean and variance (n values per statistic):
    dx = inv_std * (dxhat - sum(dxhat) / n - xhat * sum(dxhat * xhat) / n).
    `scale` is inv_std, or gamma * inv_std when gamma is constant over the axes and so left
    out of dxhat (batchnorm: dxhat is then dout, and its sums are dbeta and dgamma).
    """
    n = xhat.size // sum_dxhat.size
    dx = xhat * (sum_dxhat_xhat / n)
    dx += sum_dxhat / n
    np.subtract(dxhat, dx, out=dx)
    dx *= scale
    return dx


def _check(x, gamma, beta, rank: int, layer: str) -> None:
    """x of the given rank; gamma and beta (F,) or (1, F, 1, 1) for its F features (axis 1)."""
    axes = "(N, D)" if rank == 2 else "(N, C, H, W)"
    if x.ndim != rank:
        raise InvalidInput(f"{layer} input x must be {axes}, got shape {x.shape}")
    shapes = {(x.shape[1],), (1, x.shape[1]) + (1,) * (rank - 2)}
    for name, v in (("gamma", gamma), ("beta", beta)):
        if np.shape(v) not in shapes:
            raise InvalidInput(
                f"{layer} {name} must have shape ({x.shape[1]},) for x {x.shape}, got {np.shape(v)}"
            )


# --- batch normalization: statistics per feature, over the batch (and H, W) ----------------


def _batchnorm_forward(x, gamma, beta, bn_param):
    mode = bn_param.get("mode")
    eps = float(bn_param.get("eps", 1e-5))
    momentum = float(bn_param.get("momentum", 0.9))
    D = x.shape[1]
    axes = (0, *range(2, x.ndim))
    running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(D, dtype=x.dtype))  # as the assignment
    gamma_f, beta_f = _per_feature(gamma, x.ndim), _per_feature(beta, x.ndim)
    if mode == "train":
        xhat, mean, var, inv_std = _standardize(x, axes, eps)
        out = xhat * gamma_f
        out += beta_f
        bn_param["running_mean"] = momentum * running_mean + (1 - momentum) * mean.reshape(D)
        bn_param["running_var"] = momentum * running_var + (1 - momentum) * var.reshape(D)
        return out, (xhat, gamma, inv_std)
    if mode == "test":
        scale = gamma_f / np.sqrt(_per_feature(running_var, x.ndim) + eps)
        out = x * scale
        out += beta_f - _per_feature(running_mean, x.ndim) * scale
        return out, None
    raise InvalidInput(f"batchnorm mode must be 'train' or 'test', got {mode!r}")


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization over the batch axis.

    x: (N, D); gamma, beta: (D,). bn_param: 'mode' ('train' or 'test', required), 'eps'
    (1e-5), 'momentum' (0.9), 'running_mean' / 'running_var' ((D,), zeros when missing,
    as the assignment's; the models start running_var at ones). Train mode normalises with
    the batch statistics and updates the running ones in bn_param: running = momentum *
    running + (1 - momentum) * batch. Test mode uses the running statistics.
    """
    _check(x, gamma, beta, 2, "batchnorm")
    return _batchnorm_forward(x, gamma, beta, bn_param)


def batchnorm_backward(dout, cache):
    """dout: (N, D) or (N, C, H, W). Returns dx shaped like dout, dgamma and dbeta shaped
    like gamma (train-mode forward only).

    The compact form of the chain rule through mean and variance (n values per feature):
    dx = gamma * inv_std * (dout - sum(dout) / n - xhat * sum(dout * xhat) / n).
    """
    xhat, gamma, inv_std = cache
    axes = (0, *range(2, dout.ndim))
    dbeta = dout.sum(axis=axes, keepdims=True)
    dgamma = _sum_product(dout, xhat, axes)
    scale = _per_feature(gamma, dout.ndim) * inv_std
    dx = _standardize_backward(dout, xhat, scale, dbeta, dgamma)
    return dx, dgamma.reshape(np.shape(gamma)), dbeta.reshape(np.shape(gamma))


# The assignment asks for a node-by-node backward and a simplified "alt" one, then compares
# them; distnet's batchnorm_backward already is the simplified one, so both names are it.
batchnorm_backward_alt = batchnorm_backward


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization per channel over N, H and W (for conv layers).

    x: (N, C, H, W); gamma, beta: (C,) (or (1, C, 1, 1)); bn_param as for batchnorm_forward,
    with running statistics of shape (C,). The same as batchnorm_forward on x moved to
    (N * H * W, C), without moving it. Returns out (N, C, H, W) and a cache.
    """
    _check(x, gamma, beta, 4, "spatial batchnorm")
    return _batchnorm_forward(x, gamma, beta, bn_param)


# The same statistics over more axes: one backward for both.
spatial_batchnorm_backward = batchnorm_backward


# --- layer and group normalization: statistics per sample ----------------------------------


def _groupnorm_forward(x, gamma, beta, G, eps):
    """Standardise each sample's features in G groups of consecutive features along axis 1
    (with whatever follows them), then scale and shift each feature."""
    groups = x.reshape(x.shape[0], G, -1)
    xhat, _, _, inv_std = _standardize(groups, (2,), eps)
    xhat = xhat.reshape(x.shape)
    out = xhat * _per_feature(gamma, x.ndim)
    out += _per_feature(beta, x.ndim)
    return out, (xhat, gamma, inv_std)


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer normalization: each sample over its D features, the same in train and test.

    x: (N, D); gamma, beta: (D,); ln_param: optional 'eps' (1e-5). Returns out (N, D) and
    a cache.
    """
    _check(x, gamma, beta, 2, "layernorm")
    return _groupnorm_forward(x, gamma, beta, 1, float(ln_param.get("eps", 1e-5)))


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """Group normalization: each sample over each of G groups of C // G channels and H, W.

    x: (N, C, H, W); gamma, beta: (C,) or (1, C, 1, 1) (the notebook's); G divides C;
    gn_param: optional 'eps' (1e-5). G = 1 is layer norm over (C, H, W); G = C is
    instance norm. Returns out (N, C, H, W) and a cache.
    """
    _check(x, gamma, beta, 4, "spatial groupnorm")
    if isinstance(G, bool) or not isinstance(G, (int, np.integer)) or G < 1 or x.shape[1] % G:
        raise InvalidInput(
            f"spatial groupnorm G must be a positive integer dividing C = {x.shape[1]} "
            f"of x {x.shape}, got {G!r}"
        )
    return _groupnorm_forward(x, gamma, beta, int(G), float(gn_param.get("eps", 1e-5)))


def spatial_groupnorm_backward(dout, cache):
    """dout: (N, C, H, W), or (N, D) for layer norm. Returns dx shaped like dout, dgamma and
    dbeta shaped like gamma."""
    xhat, gamma, inv_std = cache
    axes = (0, *range(2, dout.ndim))
    dbeta = dout.sum(axis=axes)
    dgamma = _sum_product(dout, xhat, axes)
    # gamma varies inside a group, so it goes into dxhat (unlike batchnorm's backward).
    dxhat = (dout * _per_feature(gamma, dout.ndim)).reshape(inv_std.shape[:2] + (-1,))
    xhat = xhat.reshape(dxhat.shape)
    sums = dxhat.sum(axis=2, keepdims=True), _sum_product(dxhat, xhat, (2,))
    dx = _standardize_backward(dxhat, xhat, inv_std, *sums).reshape(dout.shape)
    return dx, dgamma.reshape(np.shape(gamma)), dbeta.reshape(np.shape(gamma))


# Layer norm is group norm with a single group: one backward for both.
layernorm_backward = spatial_groupnorm_backward
