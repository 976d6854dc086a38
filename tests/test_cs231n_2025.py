"""The later editions' check cells that the 2017 notebooks lack or write differently, run
against distnet.cs231n_2025 with the notebooks' imports: layer normalization
(BatchNormalization.ipynb), spatial group normalization (ConvolutionalNetworks.ipynb),
dropout with p = keep probability and FullyConnectedNet(dropout_keep_ratio=...,
normalization=...) (Dropout.ipynb, BatchNormalization.ipynb). Sources and how stated
tolerances are read: tests/cs231n_notebooks.py."""

import numpy as np
import pytest
from cs231n_notebooks import (
    about,
    below,
    check_batchnorm_net,
    check_dropout_forward,
    check_dropout_net,
    dropout_backward_error,
    norm_backward_errors,
    two_layer_activations,
)

from distnet.cs231n_2025.classifiers.fc_net import *
from distnet.cs231n_2025.layers import *
from distnet.errors import InvalidInput

# --- BatchNormalization.ipynb: layer normalization (2022 copy) -----------------------------


def test_layernorm_forward():
    D3 = 3
    a = two_layer_activations(N=4)
    # "Means should be close to zero and stds close to one."
    a_norm, _ = layernorm_forward(a, np.ones(D3), np.zeros(D3), {"mode": "train"})
    np.testing.assert_allclose(a_norm.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(a_norm.std(axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(
        a_norm.std(axis=1),  # recorded
        [0.99999995, 0.99999999, 1.0, 0.99999969],
        rtol=1e-7,
    )
    # "Now means should be close to beta and stds close to gamma."
    gamma = np.asarray([3.0, 3.0, 3.0])
    beta = np.asarray([5.0, 5.0, 5.0])
    a_norm, _ = layernorm_forward(a, gamma, beta, {"mode": "train"})
    np.testing.assert_allclose(a_norm.mean(axis=1), 5, rtol=1e-12)
    np.testing.assert_allclose(
        a_norm.std(axis=1),  # recorded
        [2.99999985, 2.99999998, 2.99999999, 2.99999907],
        rtol=1e-7,
    )


def test_layernorm_backward():
    N, D = 4, 5
    # "You should expect to see relative errors between 1e-12 and 1e-8."
    for error in norm_backward_errors(layernorm_forward, layernorm_backward, (N, D), (D,), {}):
        below(error, 1e-8)


# --- ConvolutionalNetworks.ipynb: spatial group normalization (2025 copy) -----------------


def test_spatial_groupnorm_forward():
    np.random.seed(231)
    N, C, H, W = 2, 6, 4, 5
    G = 2
    x = 4 * np.random.randn(N, C, H, W) + 10
    # "Means should be close to zero and stds close to one"
    gamma, beta = np.ones((1, C, 1, 1)), np.zeros((1, C, 1, 1))
    bn_param = {"mode": "train"}
    out, _ = spatial_groupnorm_forward(x, gamma, beta, G, bn_param)
    assert out.shape == (N, C, H, W)  # recorded "shape:  (2, 6, 4, 5)"
    out_g = out.reshape((N * G, -1))
    np.testing.assert_allclose(out_g.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(
        out_g.std(axis=1),  # recorded
        [0.99999963, 0.99999948, 0.99999973, 0.99999968],
        rtol=1e-7,
    )


def test_spatial_groupnorm_backward():
    N, C, H, W = 2, 6, 4, 5
    G = 2
    # "You should expect errors of magnitudes between 1e-12 and 1e-07." (gamma and beta
    # are (1, C, 1, 1) in this edition; dgamma and dbeta come back in that shape.)
    for error in norm_backward_errors(
        spatial_groupnorm_forward, spatial_groupnorm_backward, (N, C, H, W), (1, C, 1, 1), G, {}
    ):
        below(error, 1e-7)


# --- Dropout.ipynb: p is the probability of keeping a unit (2022 copy) --------------------


def test_dropout_forward_keep_probability():
    check_dropout_forward(dropout_forward, [0.25, 0.4, 0.7], lambda p: 1 - p)  # p keeps


def test_dropout_backward_keep_probability():
    error, dx = dropout_backward_error(dropout_forward, dropout_backward, 0.2)
    about(error, 1e-10)  # "Error should be around e-10 or less."
    assert abs((dx == 0).mean() - 0.8) < 0.15  # 100 units, p = 0.2 of them kept


def test_fully_connected_net_dropout_keep_ratio():
    assert not FullyConnectedNet([10]).use_dropout  # dropout_keep_ratio=1
    check_dropout_net(
        lambda hidden_dims, sizes, keep: FullyConnectedNet(
            hidden_dims,
            **sizes,
            weight_scale=5e-2,
            dtype=np.float64,
            dropout_keep_ratio=keep,
            seed=123,
        ),
        [1, 0.75, 0.5],
    )


# --- BatchNormalization.ipynb: normalization='batchnorm' (2022 copy) ----------------------


def test_fully_connected_net_normalization_batchnorm():
    check_batchnorm_net(
        lambda hidden_dims, sizes, reg: FullyConnectedNet(
            hidden_dims,
            **sizes,
            reg=reg,
            weight_scale=5e-2,
            dtype=np.float64,
            normalization="batchnorm",
        )
    )


# --- The edition switch: what the later API refuses ---------------------------------------


def test_later_api_bad_input_is_one_clear_error():
    with pytest.raises(InvalidInput, match="no layer norm yet"):
        FullyConnectedNet([10], normalization="layernorm")
    with pytest.raises(InvalidInput, match="normalization must be None or 'batchnorm'"):
        FullyConnectedNet([10], normalization="groupnorm")
    with pytest.raises(InvalidInput, match=r"dropout_keep_ratio must be in \(0, 1\]"):
        FullyConnectedNet([10], dropout_keep_ratio=0)
    with pytest.raises(InvalidInput, match=r"keep probability p must be in \(0, 1\]"):
        dropout_forward(np.ones((2, 3)), {"mode": "train", "p": 0})


def test_editions_differ_only_in_dropout_and_the_fc_net_signature():
    import distnet.cs231n.classifiers.fc_net as fc_2017
    import distnet.cs231n.layers as layers_2017

    x = np.ones((1000, 100))
    np.random.seed(0)
    kept_2025 = (dropout_forward(x, {"mode": "train", "p": 0.9})[0] != 0).mean()
    np.random.seed(0)
    kept_2017 = (layers_2017.dropout_forward(x, {"mode": "train", "p": 0.9})[0] != 0).mean()
    assert kept_2025 == pytest.approx(0.9, abs=0.01)
    assert kept_2017 == pytest.approx(0.1, abs=0.01)
    assert fc_2017.FullyConnectedNet([10], dropout=0.25).dropout_param["p"] == 0.25
    assert layernorm_forward is layers_2017.layernorm_forward
