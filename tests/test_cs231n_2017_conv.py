"""The check cells of the 2017 ConvolutionalNetworks notebook, run against distnet.cs231n
with the notebook's imports (sources and how stated tolerances are read:
tests/cs231n_notebooks.py). Where a 2017 cell states no tolerance, the 2022 copy's
comment on the same cell is used."""

import math

import numpy as np
import pytest
from cs231n_notebooks import (
    about,
    backward_errors,
    below,
    model_gradient_errors,
    norm_backward_errors,
    rel_error,
)

from distnet.cs231n.classifiers.cnn import *
from distnet.cs231n.fast_layers import *
from distnet.cs231n.layer_utils import (
    conv_relu_backward,
    conv_relu_forward,
    conv_relu_pool_backward,
    conv_relu_pool_forward,
)
from distnet.cs231n.layers import *
from distnet.cs231n.vis_utils import visualize_grid
from distnet.errors import InvalidInput


def test_conv_forward_naive():
    x_shape = (2, 3, 4, 4)
    w_shape = (3, 3, 4, 4)
    x = np.linspace(-0.1, 0.5, num=np.prod(x_shape)).reshape(x_shape)
    w = np.linspace(-0.2, 0.3, num=np.prod(w_shape)).reshape(w_shape)
    b = np.linspace(-0.1, 0.2, num=3)
    conv_param = {"stride": 2, "pad": 1}
    out, _ = conv_forward_naive(x, w, b, conv_param)
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
    about(rel_error(out, correct_out), 2e-8)  # "difference should be around 2e-8"


def test_conv_backward_naive():
    np.random.seed(231)
    x = np.random.randn(4, 3, 5, 5)
    w = np.random.randn(2, 3, 3, 3)
    b = np.random.randn(
        2,
    )
    dout = np.random.randn(4, 2, 5, 5)
    conv_param = {"stride": 1, "pad": 1}
    errors = backward_errors(
        lambda x, w, b: conv_forward_naive(x, w, b, conv_param),
        conv_backward_naive,
        (x, w, b),
        dout,
    )
    for error in errors:
        about(error, 1e-8)  # "Your errors should be around 1e-8"


def test_max_pool_forward_naive():
    x_shape = (2, 3, 4, 4)
    x = np.linspace(-0.3, 0.4, num=np.prod(x_shape)).reshape(x_shape)
    pool_param = {"pool_width": 2, "pool_height": 2, "stride": 2}
    out, _ = max_pool_forward_naive(x, pool_param)
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
    about(rel_error(out, correct_out), 1e-8)  # "Difference should be around 1e-8."


def test_max_pool_backward_naive():
    np.random.seed(231)
    x = np.random.randn(3, 2, 8, 8)
    dout = np.random.randn(3, 2, 4, 4)
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    [error] = backward_errors(
        lambda x: max_pool_forward_naive(x, pool_param),
        lambda d, c: (max_pool_backward_naive(d, c),),
        (x,),
        dout,
    )
    about(error, 1e-12)  # "Your error should be around 1e-12"


def test_conv_fast_against_naive():
    np.random.seed(231)
    x = np.random.randn(100, 3, 31, 31)
    w = np.random.randn(25, 3, 3, 3)
    b = np.random.randn(
        25,
    )
    dout = np.random.randn(100, 25, 16, 16)
    conv_param = {"stride": 2, "pad": 1}
    out_naive, cache_naive = conv_forward_naive(x, w, b, conv_param)
    out_fast, cache_fast = conv_forward_fast(x, w, b, conv_param)
    # No stated tolerance; the 2022 copy: "Rel errors should be around e-9 or less."
    about(rel_error(out_naive, out_fast), 1e-9)
    naive = conv_backward_naive(dout, cache_naive)
    fast = conv_backward_fast(dout, cache_fast)
    for grad_naive, grad_fast in zip(naive, fast, strict=True):
        about(rel_error(grad_naive, grad_fast), 1e-9)


def test_max_pool_fast_against_naive():
    np.random.seed(231)
    x = np.random.randn(100, 3, 32, 32)
    dout = np.random.randn(100, 3, 16, 16)
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out_naive, cache_naive = max_pool_forward_naive(x, pool_param)
    out_fast, cache_fast = max_pool_forward_fast(x, pool_param)
    # No stated tolerance (recorded 0.0); the 2022 copy: "Relative errors should be close
    # to 0.0": both pick the same maxima.
    assert rel_error(out_naive, out_fast) == 0.0
    dx_naive = max_pool_backward_naive(dout, cache_naive)
    dx_fast = max_pool_backward_fast(dout, cache_fast)
    assert rel_error(dx_naive, dx_fast) == 0.0


@pytest.mark.parametrize(
    "forward, backward, shapes, params",
    [
        (
            conv_relu_pool_forward,
            conv_relu_pool_backward,
            [(2, 3, 16, 16), (3, 3, 3, 3), (3,), (2, 3, 8, 8)],
            ({"stride": 1, "pad": 1}, {"pool_height": 2, "pool_width": 2, "stride": 2}),
        ),
        (
            conv_relu_forward,
            conv_relu_backward,
            [(2, 3, 8, 8), (3, 3, 3, 3), (3,), (2, 3, 8, 8)],
            ({"stride": 1, "pad": 1},),
        ),
    ],
    ids=["conv_relu_pool", "conv_relu"],
)
def test_conv_sandwich_layers(forward, backward, shapes, params):
    np.random.seed(231)
    x, w, b, dout = (np.random.randn(*shape) for shape in shapes)
    errors = backward_errors(lambda x, w, b: forward(x, w, b, *params), backward, (x, w, b), dout)
    for error in errors:
        # No stated tolerance; the 2022 copy: "Relative errors should be around e-8 or less"
        about(error, 1e-8)


def test_three_layer_convnet_initial_loss():
    # The cell draws from whatever state earlier cells left; seeded here.
    np.random.seed(231)
    model = ThreeLayerConvNet()
    N = 50
    X = np.random.randn(N, 3, 32, 32)
    y = np.random.randint(10, size=N)
    loss, _ = model.loss(X, y)
    # "we expect the loss for random weights (and no regularization) to be about log(C)
    # for C classes. When we add regularization this should go up."
    assert loss == pytest.approx(math.log(10), abs=0.01)
    model.reg = 0.5
    loss_with_reg, _ = model.loss(X, y)
    assert loss_with_reg > loss


def test_three_layer_convnet_gradients():
    num_inputs = 2
    input_dim = (3, 16, 16)
    num_classes = 10
    np.random.seed(231)
    X = np.random.randn(num_inputs, *input_dim)
    y = np.random.randint(num_classes, size=num_inputs)
    model = ThreeLayerConvNet(
        num_filters=3, filter_size=3, input_dim=input_dim, hidden_dim=7, dtype=np.float64
    )
    _, errors = model_gradient_errors(model, X, y, h=1e-6)
    for param_name, error in errors.items():
        # "correct implementations may still have relative errors up to 1e-2" (both the 2017
        # and 2022 copies record W2 1.82e-02: an order of magnitude).
        about(error, 1e-2, param_name)


def test_spatial_batchnorm_forward_train():
    np.random.seed(231)
    N, C, H, W = 2, 3, 4, 5
    x = 4 * np.random.randn(N, C, H, W) + 10
    # "Means should be close to zero and stds close to one"
    gamma, beta = np.ones(C), np.zeros(C)
    bn_param = {"mode": "train"}
    out, _ = spatial_batchnorm_forward(x, gamma, beta, bn_param)
    assert out.shape == x.shape
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-5)
    # "Means should be close to beta and stds close to gamma"
    gamma, beta = np.asarray([3, 4, 5]), np.asarray([6, 7, 8])
    out, _ = spatial_batchnorm_forward(x, gamma, beta, bn_param)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), beta, rtol=1e-12)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), gamma, rtol=1e-5)
    # Recorded stds (2017 and 2025 copies alike).
    np.testing.assert_allclose(
        out.std(axis=(0, 2, 3)), [2.99999885, 3.99999804, 4.99999798], rtol=1e-7
    )


def test_spatial_batchnorm_forward_test_time():
    np.random.seed(231)
    N, C, H, W = 10, 4, 11, 12
    bn_param = {"mode": "train"}
    gamma = np.ones(C)
    beta = np.zeros(C)
    for _ in range(50):
        x = 2.3 * np.random.randn(N, C, H, W) + 13
        spatial_batchnorm_forward(x, gamma, beta, bn_param)
    bn_param["mode"] = "test"
    x = 2.3 * np.random.randn(N, C, H, W) + 13
    a_norm, _ = spatial_batchnorm_forward(x, gamma, beta, bn_param)
    # "Means should be close to zero and stds close to one, but will be noisier than
    # training-time forward passes."
    assert np.all(np.abs(a_norm.mean(axis=(0, 2, 3))) < 0.2)
    assert np.all(np.abs(a_norm.std(axis=(0, 2, 3)) - 1) < 0.1)
    # Recorded (2017 and 2025 copies alike), to the printed digits: a missing running_var
    # starts at zeros as in the assignment.
    np.testing.assert_allclose(
        a_norm.mean(axis=(0, 2, 3)), [-0.08034406, 0.07562881, 0.05716371, 0.04378383], rtol=1e-6
    )
    np.testing.assert_allclose(
        a_norm.std(axis=(0, 2, 3)), [0.96718744, 1.0299714, 1.02887624, 1.00585577], rtol=1e-6
    )


def test_spatial_batchnorm_backward():
    N, C, H, W = 2, 3, 4, 5
    # No stated tolerance; the 2022 copy: "errors of magnitudes between 1e-12~1e-06".
    for error in norm_backward_errors(
        spatial_batchnorm_forward, spatial_batchnorm_backward, (N, C, H, W), (C,), {"mode": "train"}
    ):
        below(error, 1e-6)


def test_visualize_first_layer_filters():
    # The "Visualize Filters" cell, on an untrained net: 32 filters 3 x 7 x 7 in a 6 x 6
    # grid of 7 x 7 tiles one pixel apart, each tile spanning 0 to 255.
    model = ThreeLayerConvNet(weight_scale=0.001, hidden_dim=500, reg=0.001)
    grid = visualize_grid(model.params["W1"].transpose(0, 2, 3, 1))
    assert grid.shape == (6 * 8 - 1, 6 * 8 - 1, 3)
    image = grid.astype("uint8")
    assert image.min() == 0 and image.max() == 255
    tiles = [grid[r * 8 : r * 8 + 7, c * 8 : c * 8 + 7] for r in range(6) for c in range(6)][:32]
    assert all(tile.min() == 0 and tile.max() == 255 for tile in tiles)
    assert not grid[7::8].any() and not grid[:, 7::8].any()  # the padding
    with pytest.raises(InvalidInput, match=r"images \(N, H, W, C\), got shape \(7, 7\)"):
        visualize_grid(np.ones((7, 7)))
