"""Layers: forward values against independent formulas, backward against numerical gradients."""

import numpy as np
import pytest

from distnet.gradcheck import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    rel_error,
)
from distnet.layer_utils import (
    affine_bn_relu_backward,
    affine_bn_relu_forward,
    affine_relu_backward,
    affine_relu_forward,
)
from distnet.layers import (
    affine_backward,
    affine_forward,
    batchnorm_backward,
    batchnorm_forward,
    dropout_backward,
    dropout_forward,
    relu_backward,
    relu_forward,
    softmax_loss,
    svm_loss,
)


@pytest.fixture
def rng():
    return np.random.default_rng(231)


def away_from_zero(rng, shape):
    """Values with |x| >= 0.1, so a step of h never crosses ReLU's kink."""
    x = rng.uniform(0.1, 2.0, size=shape)
    return x * rng.choice([-1.0, 1.0], size=shape)


# --- affine --------------------------------------------------------------------------


def test_affine_forward_flattens_trailing_dims(rng):
    x, w, b = (
        rng.standard_normal((4, 2, 3, 5)),
        rng.standard_normal((30, 6)),
        rng.standard_normal(6),
    )
    out, _ = affine_forward(x, w, b)
    expected = np.einsum("nd,dm->nm", x.reshape(4, 30), w) + b
    assert out.shape == (4, 6)
    assert rel_error(out, expected) < 1e-12


def test_affine_backward_matches_numerical_gradient(rng):
    x, w, b = rng.standard_normal((10, 2, 3)), rng.standard_normal((6, 5)), rng.standard_normal(5)
    dout = rng.standard_normal((10, 5))
    dx_num = eval_numerical_gradient_array(lambda x: affine_forward(x, w, b)[0], x, dout)
    dw_num = eval_numerical_gradient_array(lambda w: affine_forward(x, w, b)[0], w, dout)
    db_num = eval_numerical_gradient_array(lambda b: affine_forward(x, w, b)[0], b, dout)
    dx, dw, db = affine_backward(dout, affine_forward(x, w, b)[1])
    assert dx.shape == x.shape
    assert rel_error(dx, dx_num) < 1e-8
    assert rel_error(dw, dw_num) < 1e-8
    assert rel_error(db, db_num) < 1e-8


def test_affine_backward_can_skip_dx_and_write_into_given_arrays(rng):
    x, w, b = rng.standard_normal((7, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    dout = rng.standard_normal((7, 3))
    cache = affine_forward(x, w, b)[1]
    _, dw_ref, db_ref = affine_backward(dout, cache)
    buffer = np.full(4 * 3 + 3, np.nan)
    dw_out, db_out = buffer[:12].reshape(4, 3), buffer[12:]
    dx, dw, db = affine_backward(dout, cache, input_grad=False, out=(dw_out, db_out))
    assert dx is None
    assert dw is dw_out and db is db_out
    assert rel_error(buffer, np.concatenate([dw_ref.ravel(), db_ref])) < 1e-14


# --- relu ----------------------------------------------------------------------------


def test_relu_forward_and_backward(rng):
    x = away_from_zero(rng, (6, 7))
    out, cache = relu_forward(x)
    assert np.array_equal(out, np.where(x > 0, x, 0.0))
    dout = rng.standard_normal(x.shape)
    dx_num = eval_numerical_gradient_array(lambda x: relu_forward(x)[0], x, dout)
    assert rel_error(relu_backward(dout, cache), dx_num) < 1e-10


# --- batchnorm -----------------------------------------------------------------------


def test_batchnorm_train_normalises_with_gamma_and_beta(rng):
    x = 5 + 3 * rng.standard_normal((200, 4))
    gamma, beta = np.array([1.0, 2.0, 3.0, 0.5]), np.array([0.0, -1.0, 4.0, 2.0])
    out, _ = batchnorm_forward(x, gamma, beta, {"mode": "train"})
    assert np.allclose(out.mean(axis=0), beta, rtol=0, atol=1e-12)
    assert np.allclose(out.std(axis=0), gamma, rtol=1e-5)


def test_batchnorm_running_statistics_follow_momentum_and_drive_test_mode(rng):
    x = 5 + 3 * rng.standard_normal((50, 3))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    mean0, var0 = rng.standard_normal(3), rng.uniform(1, 2, 3)
    bn_param = {
        "mode": "train",
        "momentum": 0.8,
        "eps": 1e-3,
        "running_mean": mean0.copy(),
        "running_var": var0.copy(),
    }
    batchnorm_forward(x, gamma, beta, bn_param)
    mu, var = x.sum(axis=0) / 50, ((x - x.sum(axis=0) / 50) ** 2).sum(axis=0) / 50
    assert rel_error(bn_param["running_mean"], 0.8 * mean0 + 0.2 * mu) < 1e-12
    assert rel_error(bn_param["running_var"], 0.8 * var0 + 0.2 * var) < 1e-12

    bn_param["mode"] = "test"
    out, _ = batchnorm_forward(x, gamma, beta, bn_param)
    expected = (
        gamma * (x - bn_param["running_mean"]) / np.sqrt(bn_param["running_var"] + 1e-3) + beta
    )
    assert rel_error(out, expected) < 1e-12


def test_batchnorm_backward_matches_numerical_gradient(rng):
    N, D = 8, 5
    x = 4 * rng.standard_normal((N, D)) + 10
    gamma, beta = rng.standard_normal(D), rng.standard_normal(D)
    dout = rng.standard_normal((N, D))

    def forward(x, gamma, beta):
        return batchnorm_forward(x, gamma, beta, {"mode": "train"})[0]

    dx_num = eval_numerical_gradient_array(lambda x: forward(x, gamma, beta), x, dout)
    dg_num = eval_numerical_gradient_array(lambda g: forward(x, g, beta), gamma, dout)
    db_num = eval_numerical_gradient_array(lambda b: forward(x, gamma, b), beta, dout)
    dx, dgamma, dbeta = batchnorm_backward(
        dout, batchnorm_forward(x, gamma, beta, {"mode": "train"})[1]
    )
    assert rel_error(dx, dx_num) < 1e-6
    assert rel_error(dgamma, dg_num) < 1e-8
    assert rel_error(dbeta, db_num) < 1e-8


def test_batchnorm_rejects_an_unknown_mode(rng):
    with pytest.raises(ValueError, match="'eval'"):
        batchnorm_forward(rng.standard_normal((4, 2)), np.ones(2), np.zeros(2), {"mode": "eval"})


# --- dropout -------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.25, 0.4, 0.7])
def test_dropout_drops_a_fraction_p_and_keeps_the_mean(rng, p):
    x = rng.standard_normal((500, 500)) + 10
    out, _ = dropout_forward(x, {"mode": "train", "p": p, "seed": 7})
    assert abs((out == 0).mean() - p) < 0.01
    assert abs(out.mean() - x.mean()) < 0.05 * x.mean()
    assert np.array_equal(dropout_forward(x, {"mode": "test", "p": p})[0], x)


def test_dropout_mask_is_a_function_of_the_seed(rng):
    x = rng.standard_normal((30, 40)) + 10
    a = dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 3})[0]
    b = dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 3})[0]
    c = dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 4})[0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    np.random.seed(5)  # without a seed, the global generator makes notebooks reproducible
    d = dropout_forward(x, {"mode": "train", "p": 0.5})[0]
    np.random.seed(5)
    assert np.array_equal(d, dropout_forward(x, {"mode": "train", "p": 0.5})[0])


def test_dropout_backward_matches_numerical_gradient(rng):
    x, dout = rng.standard_normal((10, 12)), rng.standard_normal((10, 12))
    param = {"mode": "train", "p": 0.3, "seed": 123}
    dx_num = eval_numerical_gradient_array(lambda x: dropout_forward(x, param)[0], x, dout)
    assert rel_error(dropout_backward(dout, dropout_forward(x, param)[1]), dx_num) < 1e-10


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_p_outside_0_1(rng, p):
    with pytest.raises(ValueError, match="dropout probability"):
        dropout_forward(rng.standard_normal((2, 2)), {"mode": "train", "p": p})


# --- losses --------------------------------------------------------------------------


def reference_softmax_loss(x, y):
    """Cross-entropy written out per sample, with Python's math on float64."""
    losses = []
    for row, label in zip(x, y, strict=True):
        m = max(row)
        losses.append(m + np.log(sum(np.exp(v - m) for v in row)) - row[label])
    return sum(losses) / len(losses)


def reference_svm_loss(x, y):
    return sum(
        max(0.0, x[i, j] - x[i, y[i]] + 1)
        for i in range(len(y))
        for j in range(x.shape[1])
        if j != y[i]
    ) / len(y)


@pytest.mark.parametrize(
    "loss_fn, reference", [(softmax_loss, reference_softmax_loss), (svm_loss, reference_svm_loss)]
)
def test_losses_match_reference_and_numerical_gradient(rng, loss_fn, reference):
    x, y = rng.standard_normal((20, 7)), rng.integers(7, size=20)
    loss, dx = loss_fn(x, y)
    assert abs(loss - reference(x, y)) < 1e-12
    dx_num = eval_numerical_gradient(lambda x: loss_fn(x, y)[0], x, verbose=False)
    assert rel_error(dx, dx_num) < 1e-7


def test_softmax_is_stable_for_huge_scores(rng):
    base = rng.standard_normal((5, 10))
    y = rng.integers(10, size=5)
    for dtype in (np.float64, np.float32):
        loss, dx = softmax_loss((base + 1e6).astype(dtype), y)
        small_loss, small_dx = softmax_loss(base.astype(dtype), y)
        assert np.isfinite(loss) and np.all(np.isfinite(dx))
        # Softmax is shift invariant; float32 only resolves 1e6 + x to 1/16.
        tol = 1e-6 if dtype == np.float64 else 0.1
        assert abs(loss - small_loss) < tol
        assert np.max(np.abs(dx - small_dx)) < tol
    assert np.isclose(softmax_loss(np.full((3, 10), 1e6), [0, 1, 2])[0], np.log(10))


@pytest.mark.parametrize("loss_fn", [softmax_loss, svm_loss])
@pytest.mark.parametrize(
    "y, message",
    [
        ([0, 1, 10], "label 10 is out of range"),
        ([0, -1, 2], "label -1 is out of range"),
        ([0.0, 1.0, 2.0], "integers"),
        ([0, 1], "shape"),
    ],
)
def test_losses_reject_bad_labels(loss_fn, y, message):
    with pytest.raises(ValueError, match=message):
        loss_fn(np.zeros((3, 10)), np.array(y))


# --- sandwich layers -----------------------------------------------------------------


def test_affine_relu_backward_matches_numerical_gradient(rng):
    x, w, b = rng.standard_normal((6, 3, 2)), rng.standard_normal((6, 8)), rng.standard_normal(8)
    dout = rng.standard_normal((6, 8))
    a = x.reshape(6, -1) @ w + b
    assert np.min(np.abs(a)) > 1e-3  # no kink within the numerical step
    out, cache = affine_relu_forward(x, w, b)
    assert rel_error(out, np.maximum(a, 0)) < 1e-12
    dx, dw, db = affine_relu_backward(dout, cache)
    for value, grad in ((x, dx), (w, dw), (b, db)):
        num = eval_numerical_gradient_array(lambda _: affine_relu_forward(x, w, b)[0], value, dout)
        assert rel_error(grad, num) < 1e-8
    assert affine_relu_backward(dout, cache, input_grad=False)[0] is None


def test_affine_bn_relu_backward_matches_numerical_gradient(rng):
    x, w, b = rng.standard_normal((9, 5)), rng.standard_normal((5, 4)), rng.standard_normal(4)
    gamma, beta = rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)
    dout = rng.standard_normal((9, 4))

    def forward(_):
        return affine_bn_relu_forward(x, w, b, gamma, beta, {"mode": "train"})[0]

    _, cache = affine_bn_relu_forward(x, w, b, gamma, beta, {"mode": "train"})
    dx, dw, db, dgamma, dbeta = affine_bn_relu_backward(dout, cache)
    for value, grad in ((x, dx), (w, dw), (gamma, dgamma), (beta, dbeta)):
        assert rel_error(grad, eval_numerical_gradient_array(forward, value, dout)) < 1e-6
    # b is followed by batchnorm, which removes any constant: its gradient is zero.
    assert np.max(np.abs(db)) < 1e-12
    assert np.max(np.abs(eval_numerical_gradient_array(forward, b, dout))) < 1e-8


# --- dtypes --------------------------------------------------------------------------


def test_float32_stays_float32_through_every_layer(rng):
    f32 = np.float32
    x, w, b = (rng.standard_normal(s).astype(f32) for s in ((8, 6), (6, 5), (5,)))
    gamma, beta = np.ones(5, f32), np.zeros(5, f32)
    # Scalars from a config (numpy float64) must not upcast the arrays.
    bn_param = {"mode": "train", "momentum": np.float64(0.9), "eps": np.float64(1e-5)}
    h, c1 = affine_bn_relu_forward(x, w, b, gamma, beta, bn_param)
    d, c2 = dropout_forward(h, {"mode": "train", "p": np.float64(0.5), "seed": 0})
    loss, dd = softmax_loss(d, rng.integers(5, size=8))
    grads = affine_bn_relu_backward(dropout_backward(dd, c2), c1)
    arrays = [
        h,
        d,
        dd,
        *grads,
        bn_param["running_mean"],
        bn_param["running_var"],
        svm_loss(d, np.zeros(8, int))[1],
        relu_backward(x, relu_forward(x)[1]),
    ]
    assert all(a.dtype == f32 for a in arrays), [a.dtype for a in arrays]
    assert isinstance(loss, float)
