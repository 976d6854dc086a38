"""Naive conv and max-pool layers and the conv sandwiches: forward values against the
notebook's numbers and a per-element definition, backward against numerical gradients,
bad shapes rejected with the shapes named."""

import numpy as np
import pytest

from distnet.errors import InvalidInput
from distnet.gradcheck import eval_numerical_gradient_array, rel_error
from distnet.layer_utils import (
    conv_bn_relu_backward,
    conv_bn_relu_forward,
    conv_relu_backward,
    conv_relu_forward,
    conv_relu_pool_backward,
    conv_relu_pool_forward,
)
from distnet.layers import (
    conv_backward_naive,
    conv_forward_naive,
    max_pool_backward_naive,
    max_pool_forward_naive,
    relu_forward,
    spatial_batchnorm_forward,
)


@pytest.fixture
def rng():
    return np.random.default_rng(231)


def numerical_grads(f, args, dout):
    """Numerical gradient of sum(f(*args) * dout) with respect to each of args."""
    return [eval_numerical_gradient_array(lambda _: f(*args), a, dout) for a in args]


# --- the assignment notebook's values ---------------------------------------------------
# CS231n assignment 2, ConvolutionalNetworks.ipynb (2017 edition, unchanged in the current
# one): the "Convolution: Naive forward pass" and "Max-Pooling: Naive forward" cells, whose
# expected difference is "around 2e-8" and "around 1e-8" (the values are printed to 8 places).


def test_conv_forward_naive_gives_the_notebooks_values():
    x = np.linspace(-0.1, 0.5, num=2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    w = np.linspace(-0.2, 0.3, num=3 * 3 * 4 * 4).reshape(3, 3, 4, 4)
    b = np.linspace(-0.1, 0.2, num=3)
    out, _ = conv_forward_naive(x, w, b, {"stride": 2, "pad": 1})
    correct_out = np.array(
        [
            [
                [[-0.08759809, -0.10987781], [-0.18387192, -0.2109216]],
                [[0.21027089, 0.21661097], [0.22847626, 0.23004637]],
                [[0.50813986, 0.54309974], [0.64082444, 0.67101435]],
            ],
            [
                [[-0.98053589, -1.03143541], [-1.19128892, -1.24695841]],
                [[0.69108355, 0.66880383], [0.59480972, 0.56776003]],
                [[2.36270298, 2.36904306], [2.38090835, 2.38247847]],
            ],
        ]
    )
    assert rel_error(out, correct_out) < 5e-8


def test_max_pool_forward_naive_gives_the_notebooks_values():
    x = np.linspace(-0.3, 0.4, num=2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    out, _ = max_pool_forward_naive(x, {"pool_width": 2, "pool_height": 2, "stride": 2})
    correct_out = np.array(
        [
            [
                [[-0.26315789, -0.24842105], [-0.20421053, -0.18947368]],
                [[-0.14526316, -0.13052632], [-0.08631579, -0.07157895]],
                [[-0.02736842, -0.01263158], [0.03157895, 0.04631579]],
            ],
            [
                [[0.09052632, 0.10526316], [0.14947368, 0.16421053]],
                [[0.20842105, 0.22315789], [0.26736842, 0.28210526]],
                [[0.32631579, 0.34105263], [0.38526316, 0.4]],
            ],
        ]
    )
    assert rel_error(out, correct_out) < 5e-8


# --- convolution ----------------------------------------------------------------------

# (x shape, w shape, stride, pad): stride 1, 2 and 3; pad 0, 1, 2; non-square and odd
# inputs; non-square and even filters; a 1x1 filter.
CONV_CASES = [
    ((2, 3, 5, 5), (4, 3, 3, 3), 1, 0),
    ((2, 3, 5, 7), (3, 3, 3, 3), 1, 1),
    ((2, 2, 7, 5), (3, 2, 3, 3), 2, 1),
    ((1, 3, 6, 8), (2, 3, 4, 2), 2, 2),
    ((3, 2, 4, 6), (2, 2, 3, 5), 1, 2),
    ((2, 1, 7, 10), (2, 1, 1, 4), 3, 0),
]


def reference_conv(x, w, b, stride, pad):
    """The definition, one output element at a time."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    (N, _, Hp, Wp), (F, _, HH, WW) = xp.shape, w.shape
    out = np.zeros((N, F, (Hp - HH) // stride + 1, (Wp - WW) // stride + 1))
    for n, f, i, j in np.ndindex(out.shape):
        window = xp[n, :, i * stride : i * stride + HH, j * stride : j * stride + WW]
        out[n, f, i, j] = np.sum(window * w[f]) + b[f]
    return out


@pytest.mark.parametrize("x_shape, w_shape, stride, pad", CONV_CASES)
def test_conv_forward_naive_matches_the_definition(rng, x_shape, w_shape, stride, pad):
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    out, cache = conv_forward_naive(x, w, b, {"stride": stride, "pad": pad})
    assert rel_error(out, reference_conv(x, w, b, stride, pad)) < 1e-12
    assert cache[:3] == (x, w, b)


@pytest.mark.parametrize("x_shape, w_shape, stride, pad", CONV_CASES)
def test_conv_backward_naive_matches_numerical_gradient(rng, x_shape, w_shape, stride, pad):
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    conv_param = {"stride": stride, "pad": pad}
    out, cache = conv_forward_naive(x, w, b, conv_param)
    dout = rng.standard_normal(out.shape)
    grads = conv_backward_naive(dout, cache)
    expected = numerical_grads(lambda *a: conv_forward_naive(*a, conv_param)[0], (x, w, b), dout)
    for grad, num, value in zip(grads, expected, (x, w, b), strict=True):
        assert grad.shape == value.shape
        assert rel_error(grad, num) < 1e-7


# --- max pooling ----------------------------------------------------------------------

# (x shape, pool height, pool width, stride): the usual 2x2/2, overlapping windows, a
# non-square window on odd and non-square inputs, windows with gaps between them.
POOL_CASES = [
    ((2, 3, 4, 4), 2, 2, 2),
    ((2, 2, 5, 7), 3, 3, 1),
    ((1, 3, 7, 5), 3, 1, 2),
    ((2, 2, 7, 7), 1, 1, 3),
    ((3, 1, 8, 9), 2, 3, 3),
]


def reference_max_pool(x, ph, pw, stride):
    N, C, H, W = x.shape
    out = np.zeros((N, C, (H - ph) // stride + 1, (W - pw) // stride + 1))
    for n, c, i, j in np.ndindex(out.shape):
        rows, cols = slice(i * stride, i * stride + ph), slice(j * stride, j * stride + pw)
        out[n, c, i, j] = x[n, c, rows, cols].max()
    return out


@pytest.mark.parametrize("x_shape, ph, pw, stride", POOL_CASES)
def test_max_pool_naive_matches_definition_and_numerical_gradient(rng, x_shape, ph, pw, stride):
    # A permutation: all values distinct and 1/size apart, so no step of h changes a maximum.
    x = rng.permutation(np.prod(x_shape)).reshape(x_shape) / np.prod(x_shape)
    pool_param = {"pool_height": ph, "pool_width": pw, "stride": stride}
    out, cache = max_pool_forward_naive(x, pool_param)
    assert np.array_equal(out, reference_max_pool(x, ph, pw, stride))
    dout = rng.standard_normal(out.shape)
    dx_num = eval_numerical_gradient_array(
        lambda x: max_pool_forward_naive(x, pool_param)[0], x, dout
    )
    assert rel_error(max_pool_backward_naive(dout, cache), dx_num) < 1e-10


def test_max_pool_backward_sends_a_tie_to_the_first_maximum(rng):
    x = np.zeros((1, 2, 4, 4))  # every window ties
    x[0, 1, 1, 1] = 1.0  # ... except the first window of channel 1
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = max_pool_forward_naive(x, pool_param)
    dout = rng.standard_normal(out.shape)
    dx = max_pool_backward_naive(dout, cache)
    expected = np.zeros_like(x)
    expected[:, :, ::2, ::2] = dout
    expected[0, 1, 0, 0], expected[0, 1, 1, 1] = 0.0, dout[0, 1, 0, 0]
    assert np.array_equal(dx, expected)


# --- dtypes ---------------------------------------------------------------------------


def test_float32_stays_float32_through_naive_conv_and_pool(rng):
    f32 = np.float32
    x, w = rng.standard_normal((2, 3, 6, 6), f32), rng.standard_normal((4, 3, 3, 3), f32)
    b = rng.standard_normal(4, f32)
    out, cache = conv_forward_naive(x, w, b, {"stride": 1, "pad": 1})
    grads = conv_backward_naive(np.ones_like(out), cache)
    pooled, pool_cache = max_pool_forward_naive(out, POOL_2X2)
    dpool = max_pool_backward_naive(np.ones_like(pooled), pool_cache)
    assert all(a.dtype == f32 for a in (out, *grads, pooled, dpool))


# --- bad input ------------------------------------------------------------------------

X, W, B = np.zeros((2, 3, 8, 8)), np.zeros((4, 3, 3, 3)), np.zeros(4)
POOL_2X2 = {"pool_height": 2, "pool_width": 2, "stride": 2}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"x": np.zeros((3, 8, 8))}, r"x must be \(N, C, H, W\), got shape \(3, 8, 8\)"),
        ({"w": np.zeros((3, 3, 3))}, r"w must be \(F, C, HH, WW\), got shape \(3, 3, 3\)"),
        (
            {"w": np.zeros((4, 1, 3, 3))},
            r"x \(2, 3, 8, 8\) has 3 channels, but the filters w \(4, 1, 3, 3\) expect 1",
        ),
        ({"b": np.zeros(3)}, r"bias b must have shape \(4,\), got \(3,\)"),
        (
            {"conv_param": {"stride": 2, "pad": 0}},
            (
                r"conv of x \(2, 3, 8, 8\) with w \(4, 3, 3, 3\), stride 2, pad 0: windows of "
                r"height 3 at stride 2 do not tile the input height 8 \(8 - 3 is not a multiple"
            ),
        ),
        (
            {"w": np.zeros((4, 3, 4, 3)), "conv_param": {"stride": 2, "pad": 1}},
            "windows of width 3 at stride 2 do not tile the padded input width 10",
        ),
        (
            {"w": np.zeros((4, 3, 11, 3))},
            "the window height 11 exceeds the padded input height 10",
        ),
        ({"conv_param": {"stride": 1}}, r"missing \['pad'\]"),
        ({"conv_param": {"stride": 1, "pad": 1, "dilation": 2}}, r"unknown \['dilation'\]"),
        (
            {"conv_param": {"stride": 0, "pad": 1}},
            r"conv_param\['stride'\] must be an integer >= 1, got 0",
        ),
        (
            {"conv_param": {"stride": 1, "pad": -1}},
            r"conv_param\['pad'\] must be an integer >= 0, got -1",
        ),
        ({"conv_param": {"stride": 1.0, "pad": 1}}, r"conv_param\['stride'\] must be an integer"),
    ],
)
def test_conv_rejects_bad_input_naming_the_shapes(changes, message):
    args = {"x": X, "w": W, "b": B, "conv_param": {"stride": 1, "pad": 1}} | changes
    with pytest.raises(InvalidInput, match=message):
        conv_forward_naive(**args)


@pytest.mark.parametrize(
    "x, pool_param, message",
    [
        (np.zeros((2, 8, 8)), POOL_2X2, r"x must be \(N, C, H, W\), got shape \(2, 8, 8\)"),
        (
            np.zeros((2, 3, 7, 8)),
            POOL_2X2,
            (
                r"2x2 max pool of x \(2, 3, 7, 8\), stride 2: windows of height 2 at stride 2 "
                r"do not tile the input height 7"
            ),
        ),
        (
            X,
            {"pool_height": 2, "pool_width": 3, "stride": 2},
            "windows of width 3 at stride 2 do not tile the input width 8",
        ),
        (
            np.zeros((2, 3, 2, 2)),
            {"pool_height": 3, "pool_width": 3, "stride": 1},
            "the window height 3 exceeds the input height 2",
        ),
        (X, {"pool_height": 2, "stride": 2}, r"missing \['pool_width'\]"),
        (
            X,
            {"pool_height": 2, "pool_width": 2, "stride": 0},
            r"pool_param\['stride'\] must be an integer >= 1",
        ),
    ],
)
def test_max_pool_rejects_bad_input_naming_the_shapes(x, pool_param, message):
    with pytest.raises(InvalidInput, match=message):
        max_pool_forward_naive(x, pool_param)


def test_backward_rejects_a_dout_of_the_wrong_shape():
    _, cache = conv_forward_naive(X, W, B, {"stride": 1, "pad": 1})
    expected = r"conv backward: dout has shape \(2, 4, 7, 8\), but the forward output had"
    with pytest.raises(InvalidInput, match=expected + r" \(2, 4, 8, 8\)"):
        conv_backward_naive(np.zeros((2, 4, 7, 8)), cache)
    _, cache = max_pool_forward_naive(X, POOL_2X2)
    with pytest.raises(InvalidInput, match=r"max pool backward: dout has shape \(2, 3, 4\)"):
        max_pool_backward_naive(np.zeros((2, 3, 4)), cache)


# --- conv sandwich layers (fast layers inside) -------------------------------------------


def kink_free_conv_input(rng, x_shape, w_shape, conv_param, margin=1e-3):
    """x, w, b whose conv outputs are all at least `margin` from ReLU's kink at 0."""
    for _ in range(100):
        x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
        b = rng.standard_normal(w_shape[0])
        a = conv_forward_naive(x, w, b, conv_param)[0]
        if np.min(np.abs(a)) > margin:
            return x, w, b
    raise AssertionError("no kink-free draw")


def test_conv_relu_matches_naive_layers_and_numerical_gradient(rng):
    conv_param = {"stride": 1, "pad": 1}
    x, w, b = kink_free_conv_input(rng, (2, 3, 6, 5), (3, 3, 3, 3), conv_param)
    out, cache = conv_relu_forward(x, w, b, conv_param)
    assert rel_error(out, relu_forward(conv_forward_naive(x, w, b, conv_param)[0])[0]) < 1e-12
    dout = rng.standard_normal(out.shape)
    grads = conv_relu_backward(dout, cache)
    expected = numerical_grads(lambda *a: conv_relu_forward(*a, conv_param)[0], (x, w, b), dout)
    for grad, num in zip(grads, expected, strict=True):
        assert rel_error(grad, num) < 1e-7
    dw, db = np.empty_like(w), np.empty_like(b)
    dx, dw_out, db_out = conv_relu_backward(dout, cache, input_grad=False, out=(dw, db))
    assert dx is None and dw_out is dw and db_out is db
    assert np.array_equal(dw, grads[1]) and np.array_equal(db, grads[2])


def test_conv_relu_pool_matches_naive_layers_and_numerical_gradient(rng):
    # The notebook's shapes (ConvolutionalNetworks.ipynb, "Sandwich layers").
    conv_param = {"stride": 1, "pad": 1}
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    x, w, b = kink_free_conv_input(rng, (2, 3, 16, 16), (3, 3, 3, 3), conv_param)
    relu_out = relu_forward(conv_forward_naive(x, w, b, conv_param)[0])[0]
    windows = relu_out.reshape(2, 3, 8, 2, 8, 2).transpose(0, 1, 2, 4, 3, 5).reshape(-1, 4)
    second, top = np.sort(windows)[:, -2:].T
    assert np.min((top - second)[top > 0]) > 1e-3  # no maximum changes within a step of h
    out, cache = conv_relu_pool_forward(x, w, b, conv_param, pool_param)
    assert rel_error(out, max_pool_forward_naive(relu_out, pool_param)[0]) < 1e-12
    dout = rng.standard_normal(out.shape)
    grads = conv_relu_pool_backward(dout, cache)
    expected = numerical_grads(
        lambda *a: conv_relu_pool_forward(*a, conv_param, pool_param)[0], (x, w, b), dout
    )
    for grad, num in zip(grads, expected, strict=True):
        assert rel_error(grad, num) < 1e-7
    assert conv_relu_pool_backward(dout, cache, input_grad=False)[0] is None


def test_conv_bn_relu_matches_naive_layers_and_numerical_gradient(rng):
    conv_param = {"stride": 2, "pad": 1}
    x, w = rng.standard_normal((3, 2, 5, 7)), rng.standard_normal((4, 2, 3, 3))
    b, gamma, beta = rng.standard_normal(4), rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)

    def forward(*args):
        return conv_bn_relu_forward(*args, conv_param, {"mode": "train"})[0]

    a = conv_forward_naive(x, w, b, conv_param)[0]
    an = spatial_batchnorm_forward(a, gamma, beta, {"mode": "train"})[0]
    assert np.min(np.abs(an)) > 1e-3  # no kink within the numerical step
    out, cache = conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, {"mode": "train"})
    assert rel_error(out, np.maximum(an, 0)) < 1e-12
    dout = rng.standard_normal(out.shape)
    dx, dw, db, dgamma, dbeta = conv_bn_relu_backward(dout, cache)
    num_x, num_w, num_b, num_gamma, num_beta = numerical_grads(
        forward, (x, w, b, gamma, beta), dout
    )
    for grad, num in ((dx, num_x), (dw, num_w), (dgamma, num_gamma), (dbeta, num_beta)):
        assert rel_error(grad, num) < 1e-6
    # b is followed by batchnorm, which removes any constant per channel: its gradient is zero.
    assert np.max(np.abs(db)) < 1e-12 and np.max(np.abs(num_b)) < 1e-8
    assert conv_bn_relu_backward(dout, cache, input_grad=False)[0] is None


def test_float32_stays_float32_through_the_conv_sandwiches(rng):
    f32 = np.float32
    x, w = rng.standard_normal((2, 3, 8, 8), f32), rng.standard_normal((4, 3, 3, 3), f32)
    b, gamma, beta = rng.standard_normal(4, f32), np.ones(4, f32), np.zeros(4, f32)
    conv_param = {"stride": 1, "pad": 1}
    bn_param = {"mode": "train", "momentum": np.float64(0.9), "eps": np.float64(1e-5)}
    h, c1 = conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, bn_param)
    p, c2 = conv_relu_pool_forward(h, w.transpose(1, 0, 2, 3).copy(), b[:3], conv_param, POOL_2X2)
    arrays = [
        h,
        p,
        *conv_relu_pool_backward(np.ones_like(p), c2),
        *conv_bn_relu_backward(np.ones_like(h), c1),
        bn_param["running_mean"],
        bn_param["running_var"],
    ]
    assert all(a.dtype == f32 for a in arrays), [a.dtype for a in arrays]
