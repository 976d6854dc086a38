"""Spatial batch, layer and group normalization, and batchnorm_backward_alt: each against
an independent formulation, backward against numerical gradients, bad shapes rejected."""

import numpy as np
import pytest

from distnet.errors import InvalidInput
from distnet.gradcheck import eval_numerical_gradient_array, rel_error
from distnet.layers import (
    batchnorm_backward,
    batchnorm_backward_alt,
    batchnorm_forward,
    layernorm_backward,
    layernorm_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    spatial_groupnorm_backward,
    spatial_groupnorm_forward,
)


@pytest.fixture
def rng():
    return np.random.default_rng(231)


def check_gradients(forward, backward, x, gamma, beta, dx_tol=1e-6):
    """backward's dx, dgamma, dbeta against numerical gradients of forward(x, gamma, beta)."""
    dout = np.random.default_rng(0).standard_normal(forward(x, gamma, beta)[0].shape)
    dx, dgamma, dbeta = backward(dout, forward(x, gamma, beta)[1])
    num_x = eval_numerical_gradient_array(lambda v: forward(v, gamma, beta)[0], x, dout)
    num_gamma = eval_numerical_gradient_array(lambda v: forward(x, v, beta)[0], gamma, dout)
    num_beta = eval_numerical_gradient_array(lambda v: forward(x, gamma, v)[0], beta, dout)
    assert dx.shape == x.shape and dgamma.shape == gamma.shape and dbeta.shape == beta.shape
    assert rel_error(dx, num_x) < dx_tol
    assert rel_error(dgamma, num_gamma) < 1e-8
    assert rel_error(dbeta, num_beta) < 1e-8


def to_rows(a):
    """(N, C, H, W) -> (N * H * W, C): one row per pixel, as FC batchnorm sees them."""
    return a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])


# --- batchnorm_backward_alt ------------------------------------------------------------


def staged_batchnorm_backward(dout, x, gamma, eps=1e-5):
    """Batchnorm's backward node by node through its computation graph (what the
    notebook's batchnorm_backward is; the simplified formula is its _alt)."""
    N = x.shape[0]
    mu = x.sum(axis=0) / N
    xmu = x - mu
    var = (xmu**2).sum(axis=0) / N
    std = np.sqrt(var + eps)
    xhat = xmu / std
    dxhat = dout * gamma
    dxmu = dxhat / std  # through xhat = xmu * (1 / std), the xmu branch
    dstd = -(dxhat * xmu).sum(axis=0) / std**2  # ... and the 1 / std branch
    dvar = dstd / (2 * std)
    dxmu += 2 * xmu * dvar / N
    dx = dxmu - dxmu.sum(axis=0) / N  # through xmu = x - mu
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def test_batchnorm_backward_alt_equals_batchnorm_backward_and_the_staged_graph(rng):
    # The notebook's comparison cell (BatchNormalization.ipynb, "Batch normalization:
    # alternative backward"): N, D = 100, 500 and x = 5 * randn + 12; it expects the
    # differences to be tiny (it prints dx difference, dgamma and dbeta difference).
    N, D = 100, 500
    x = 5 * rng.standard_normal((N, D)) + 12
    gamma, beta, dout = rng.standard_normal(D), rng.standard_normal(D), rng.standard_normal((N, D))
    _, cache = batchnorm_forward(x, gamma, beta, {"mode": "train"})
    staged = staged_batchnorm_backward(dout, x, gamma)
    for backward in (batchnorm_backward, batchnorm_backward_alt):
        for got, expected in zip(backward(dout, cache), staged, strict=True):
            assert rel_error(got, expected) < 1e-9


# --- spatial batch normalization -------------------------------------------------------


def test_spatial_batchnorm_equals_batchnorm_on_the_pixels_as_rows(rng):
    N, C, H, W = 3, 4, 5, 3
    x = 4 * rng.standard_normal((N, C, H, W)) + 10
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    dout = rng.standard_normal((N, C, H, W))
    spatial_param, fc_param = {"mode": "train", "momentum": 0.7}, {"mode": "train", "momentum": 0.7}
    out, cache = spatial_batchnorm_forward(x, gamma, beta, spatial_param)
    out_rows, cache_rows = batchnorm_forward(to_rows(x), gamma, beta, fc_param)
    assert rel_error(to_rows(out), out_rows) < 1e-12
    for key in ("running_mean", "running_var"):
        assert spatial_param[key].shape == (C,)
        assert rel_error(spatial_param[key], fc_param[key]) < 1e-12
    dx, dgamma, dbeta = spatial_batchnorm_backward(dout, cache)
    dx_rows, dgamma_rows, dbeta_rows = batchnorm_backward(to_rows(dout), cache_rows)
    assert rel_error(to_rows(dx), dx_rows) < 1e-10
    assert rel_error(dgamma, dgamma_rows) < 1e-12 and rel_error(dbeta, dbeta_rows) < 1e-12

    spatial_param["mode"] = fc_param["mode"] = "test"
    out = spatial_batchnorm_forward(x, gamma, beta, spatial_param)[0]
    assert rel_error(to_rows(out), batchnorm_forward(to_rows(x), gamma, beta, fc_param)[0]) < 1e-12


def test_spatial_batchnorm_train_forward_gives_each_channel_mean_beta_and_std_gamma(rng):
    # As the notebook's "Spatial batch normalization: forward" cell: N, C, H, W = 2, 3, 4, 5,
    # x = 4 * randn + 10, gamma = [3, 4, 5], beta = [6, 7, 8].
    x = 4 * rng.standard_normal((2, 3, 4, 5)) + 10
    gamma, beta = np.array([3.0, 4.0, 5.0]), np.array([6.0, 7.0, 8.0])
    out, _ = spatial_batchnorm_forward(x, gamma, beta, {"mode": "train"})
    assert np.allclose(out.mean(axis=(0, 2, 3)), beta, rtol=0, atol=1e-12)
    assert np.allclose(out.std(axis=(0, 2, 3)), gamma, rtol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 2, 5, 3), (1, 4, 3, 3)])
def test_spatial_batchnorm_backward_matches_numerical_gradient(rng, shape):
    # The notebook's case first: N, C, H, W = 2, 3, 4, 5 and x = 5 * randn + 12.
    x = 5 * rng.standard_normal(shape) + 12
    gamma, beta = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])

    def forward(x, gamma, beta):
        return spatial_batchnorm_forward(x, gamma, beta, {"mode": "train"})

    check_gradients(forward, spatial_batchnorm_backward, x, gamma, beta)


# --- layer normalization --------------------------------------------------------------


def test_layernorm_gives_each_sample_mean_beta_and_std_gamma(rng):
    # As the notebook's layer-norm forward cell (LayerNormalization.ipynb, current edition):
    # gamma 3 and beta 5 for every feature give every sample mean 5 and std 3.
    x = 4 * rng.standard_normal((4, 60)) + 10 * rng.standard_normal((4, 1))
    out, _ = layernorm_forward(x, np.full(60, 3.0), np.full(60, 5.0), {})
    assert np.allclose(out.mean(axis=1), 5.0, rtol=0, atol=1e-12)
    assert np.allclose(out.std(axis=1), 3.0, rtol=1e-5)


def test_layernorm_is_batchnorm_of_the_transpose(rng):
    # The assignment's hint: layer norm normalises the rows as batchnorm does the columns.
    x = 3 * rng.standard_normal((6, 7)) + 2
    gamma, beta, dout = rng.standard_normal(7), rng.standard_normal(7), rng.standard_normal((6, 7))
    ones, zeros = np.ones(6), np.zeros(6)
    out, cache = layernorm_forward(x, gamma, beta, {"eps": 1e-3})
    xhat_t, cache_t = batchnorm_forward(x.T, ones, zeros, {"mode": "train", "eps": 1e-3})
    assert rel_error(out, xhat_t.T * gamma + beta) < 1e-12
    dx, dgamma, dbeta = layernorm_backward(dout, cache)
    assert rel_error(dx, batchnorm_backward((dout * gamma).T, cache_t)[0].T) < 1e-10
    assert rel_error(dgamma, (dout * xhat_t.T).sum(axis=0)) < 1e-12
    assert rel_error(dbeta, dout.sum(axis=0)) < 1e-12


@pytest.mark.parametrize("shape", [(4, 5), (3, 9), (1, 6)])
def test_layernorm_backward_matches_numerical_gradient(rng, shape):
    # The notebook's case first: N, D = 4, 5 and x = 5 * randn + 12.
    x = 5 * rng.standard_normal(shape) + 12
    gamma, beta = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])

    def forward(x, gamma, beta):
        return layernorm_forward(x, gamma, beta, {})

    check_gradients(forward, layernorm_backward, x, gamma, beta)


# --- spatial group normalization ------------------------------------------------------


def test_groupnorm_normalises_each_group_of_each_sample(rng):
    # As the notebook's group-norm forward cell (ConvolutionalNetworks.ipynb, current
    # edition): N, C, H, W = 2, 6, 4, 5, G = 2, gamma and beta of shape (1, C, 1, 1).
    x = 4 * rng.standard_normal((2, 6, 4, 5)) + 10
    out, _ = spatial_groupnorm_forward(x, np.ones((1, 6, 1, 1)), np.zeros((1, 6, 1, 1)), 2, {})
    groups = out.reshape(2 * 2, -1)
    assert np.allclose(groups.mean(axis=1), 0, rtol=0, atol=1e-12)
    assert np.allclose(groups.std(axis=1), 1, rtol=1e-5)


def test_groupnorm_with_one_group_is_layernorm_over_c_h_w(rng):
    N, C, H, W = 3, 4, 3, 5
    x = 2 * rng.standard_normal((N, C, H, W)) + 1
    gamma, beta, dout = rng.standard_normal(C), rng.standard_normal(C), rng.standard_normal(x.shape)
    # Layer norm over the flattened sample, with each channel's gamma repeated over H * W.
    gamma_flat, beta_flat = np.repeat(gamma, H * W), np.repeat(beta, H * W)
    out, cache = spatial_groupnorm_forward(x, gamma, beta, 1, {})
    out_ln, cache_ln = layernorm_forward(x.reshape(N, -1), gamma_flat, beta_flat, {})
    assert rel_error(out, out_ln.reshape(x.shape)) < 1e-12
    dx, dgamma, dbeta = spatial_groupnorm_backward(dout, cache)
    dx_ln, dgamma_ln, dbeta_ln = layernorm_backward(dout.reshape(N, -1), cache_ln)
    assert rel_error(dx, dx_ln.reshape(x.shape)) < 1e-10
    assert rel_error(dgamma, dgamma_ln.reshape(C, -1).sum(axis=1)) < 1e-12
    assert rel_error(dbeta, dbeta_ln.reshape(C, -1).sum(axis=1)) < 1e-12


def reference_groupnorm(x, gamma, beta, G, eps=1e-5):
    """Each sample's G groups of channels standardised one at a time."""
    out = np.empty_like(x)
    size = x.shape[1] // G
    for n in range(x.shape[0]):
        for g in range(G):
            group = x[n, g * size : (g + 1) * size]
            out[n, g * size : (g + 1) * size] = (group - group.mean()) / np.sqrt(group.var() + eps)
    return out * gamma.reshape(1, -1, 1, 1) + beta.reshape(1, -1, 1, 1)


@pytest.mark.parametrize(
    "shape, G, param_shape",
    [
        ((2, 6, 4, 5), 2, (1, 6, 1, 1)),  # the notebook's gradient-check case
        ((2, 6, 3, 3), 3, (6,)),
        ((3, 4, 5, 2), 4, (4,)),  # G = C: instance norm
        ((1, 3, 3, 7), 1, (1, 3, 1, 1)),
    ],
)
def test_groupnorm_matches_reference_and_numerical_gradient(rng, shape, G, param_shape):
    x = 5 * rng.standard_normal(shape) + 12
    gamma, beta = rng.standard_normal(param_shape), rng.standard_normal(param_shape)
    out, _ = spatial_groupnorm_forward(x, gamma, beta, G, {})
    assert rel_error(out, reference_groupnorm(x, gamma, beta, G)) < 1e-12

    def forward(x, gamma, beta):
        return spatial_groupnorm_forward(x, gamma, beta, G, {})

    check_gradients(forward, spatial_groupnorm_backward, x, gamma, beta)


# --- dtypes and bad input -------------------------------------------------------------


def test_float32_stays_float32_through_every_normalisation(rng):
    f32 = np.float32
    x4, dout4 = rng.standard_normal((2, 4, 3, 3), f32), rng.standard_normal((2, 4, 3, 3), f32)
    x2, dout2 = rng.standard_normal((5, 4), f32), rng.standard_normal((5, 4), f32)
    gamma, beta = np.ones(4, f32), np.zeros(4, f32)
    eps = np.float64(1e-5)  # scalars from a config must not upcast the arrays
    bn_param = {"mode": "train", "momentum": np.float64(0.9), "eps": eps}
    out_bn, cache_bn = spatial_batchnorm_forward(x4, gamma, beta, bn_param)
    out_ln, cache_ln = layernorm_forward(x2, gamma, beta, {"eps": eps})
    out_gn, cache_gn = spatial_groupnorm_forward(x4, gamma, beta, 2, {"eps": eps})
    arrays = [
        out_bn,
        out_ln,
        out_gn,
        *spatial_batchnorm_backward(dout4, cache_bn),
        *layernorm_backward(dout2, cache_ln),
        *spatial_groupnorm_backward(dout4, cache_gn),
        bn_param["running_mean"],
        bn_param["running_var"],
        spatial_batchnorm_forward(x4, gamma, beta, dict(bn_param, mode="test"))[0],
    ]
    assert all(a.dtype == f32 for a in arrays), [a.dtype for a in arrays]


X4, X2, G4, G6 = np.zeros((2, 4, 3, 3)), np.zeros((5, 4)), np.ones(4), np.ones(6)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: spatial_batchnorm_forward(X2, G4, G4, {"mode": "train"}),
            r"spatial batchnorm input x must be \(N, C, H, W\), got shape \(5, 4\)",
        ),
        (
            lambda: batchnorm_forward(X4, G4, G4, {"mode": "train"}),
            r"batchnorm input x must be \(N, D\), got shape \(2, 4, 3, 3\)",
        ),
        (
            lambda: spatial_batchnorm_forward(X4, G6, G4, {"mode": "train"}),
            r"spatial batchnorm gamma must have shape \(4,\) for x \(2, 4, 3, 3\), got \(6,\)",
        ),
        (
            lambda: spatial_batchnorm_forward(X4, G4, G4, {"mode": "eval"}),
            "batchnorm mode must be 'train' or 'test', got 'eval'",
        ),
        (
            lambda: layernorm_forward(X4, G4, G4, {}),
            r"layernorm input x must be \(N, D\), got shape \(2, 4, 3, 3\)",
        ),
        (
            lambda: layernorm_forward(X2, G4, G6, {}),
            r"layernorm beta must have shape \(4,\) for x \(5, 4\), got \(6,\)",
        ),
        (
            lambda: spatial_groupnorm_forward(X2, G4, G4, 2, {}),
            r"spatial groupnorm input x must be \(N, C, H, W\), got shape \(5, 4\)",
        ),
        (
            lambda: spatial_groupnorm_forward(X4, G4.reshape(4, 1, 1), G4, 2, {}),
            r"spatial groupnorm gamma must have shape \(4,\) for x \(2, 4, 3, 3\), got \(4, 1, 1\)",
        ),
        (
            lambda: spatial_groupnorm_forward(X4, G4, G4, 3, {}),
            r"G must be a positive integer dividing C = 4 of x \(2, 4, 3, 3\), got 3",
        ),
        (lambda: spatial_groupnorm_forward(X4, G4, G4, 0, {}), "got 0"),
        (lambda: spatial_groupnorm_forward(X4, G4, G4, 2.0, {}), "got 2.0"),
    ],
)
def test_normalisations_reject_bad_input_naming_the_shapes(call, message):
    with pytest.raises(InvalidInput, match=message):
        call()
