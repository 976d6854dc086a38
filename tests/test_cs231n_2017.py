"""The check cells of the 2017 FullyConnectedNets, BatchNormalization and Dropout
notebooks, run against distnet.cs231n with the notebooks' imports (see
tests/cs231n_notebooks.py for the sources and how stated tolerances are read).

Each test is one cell: its inputs, seeds and expected arrays as the notebook has them,
its printed comparisons turned into asserts.
"""

import numpy as np
import pytest
from cs231n_notebooks import (
    about,
    backward_errors,
    below,
    check_batchnorm_net,
    check_dropout_forward,
    check_dropout_net,
    dropout_backward_error,
    fc_check_data,
    model_gradient_errors,
    norm_backward_errors,
    norm_check_inputs,
    rel_error,
    two_layer_activations,
)

from distnet.cs231n.classifiers.fc_net import *
from distnet.cs231n.gradient_check import (
    eval_numerical_gradient,
)
from distnet.cs231n.layer_utils import affine_relu_backward, affine_relu_forward
from distnet.cs231n.optim import adam, rmsprop, sgd_momentum

# --- FullyConnectedNets.ipynb -------------------------------------------------------------


def test_affine_forward():
    num_inputs, input_shape, output_dim = 2, (4, 5, 6), 3
    input_size = num_inputs * np.prod(input_shape)
    weight_size = output_dim * np.prod(input_shape)
    x = np.linspace(-0.1, 0.5, num=input_size).reshape(num_inputs, *input_shape)
    w = np.linspace(-0.2, 0.3, num=weight_size).reshape(np.prod(input_shape), output_dim)
    b = np.linspace(-0.3, 0.1, num=output_dim)
    out, _ = affine_forward(x, w, b)
    correct_out = np.array(
        [[1.49834967, 1.70660132, 1.91485297], [3.25553199, 3.5141327, 3.77273342]]
    )
    about(rel_error(out, correct_out), 1e-9)  # "The error should be around 1e-9."


# The affine and affine-relu backward cells: seed 231, then x, w, b and dout of these
# shapes. The sandwich cell states no tolerance: that of affine_backward, "around 1e-10".
@pytest.mark.parametrize(
    "forward, backward, shapes",
    [
        (affine_forward, affine_backward, [(10, 2, 3), (6, 5), (5,), (10, 5)]),
        (affine_relu_forward, affine_relu_backward, [(2, 3, 4), (12, 10), (10,), (2, 10)]),
    ],
    ids=["affine", "affine_relu"],
)
def test_affine_backward(forward, backward, shapes):
    np.random.seed(231)
    x, w, b, dout = (np.random.randn(*shape) for shape in shapes)
    for error in backward_errors(forward, backward, (x, w, b), dout):
        about(error, 1e-10)  # "The error should be around 1e-10"


def test_relu_forward():
    x = np.linspace(-0.5, 0.5, num=12).reshape(3, 4)
    out, _ = relu_forward(x)
    correct_out = np.array(
        [
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.04545455, 0.13636364],
            [0.22727273, 0.31818182, 0.40909091, 0.5],
        ]
    )
    about(rel_error(out, correct_out), 5e-8)  # "The error should be around 5e-8"


def test_relu_backward():
    np.random.seed(231)
    x = np.random.randn(10, 10)
    dout = np.random.randn(*x.shape)
    [error] = backward_errors(relu_forward, lambda d, c: (relu_backward(d, c),), (x,), dout)
    about(error, 3e-12)  # "The error should be around 3e-12"


def test_svm_and_softmax_loss():
    np.random.seed(231)
    num_classes, num_inputs = 10, 50
    x = 0.001 * np.random.randn(num_inputs, num_classes)
    y = np.random.randint(num_classes, size=num_inputs)
    # "Loss should be around 9 and dx error should be 1e-9"
    dx_num = eval_numerical_gradient(lambda x: svm_loss(x, y)[0], x, verbose=False)
    loss, dx = svm_loss(x, y)
    assert loss == pytest.approx(9, abs=0.05)
    about(rel_error(dx_num, dx), 1e-9)
    # "Loss should be 2.3 and dx error should be 1e-8"
    dx_num = eval_numerical_gradient(lambda x: softmax_loss(x, y)[0], x, verbose=False)
    loss, dx = softmax_loss(x, y)
    assert loss == pytest.approx(2.3, abs=0.05)
    about(rel_error(dx_num, dx), 1e-8)


def test_two_layer_net():
    np.random.seed(231)
    N, D, H, C = 3, 5, 50, 7
    X = np.random.randn(N, D)
    y = np.random.randint(C, size=N)

    std = 1e-3
    model = TwoLayerNet(input_dim=D, hidden_dim=H, num_classes=C, weight_scale=std)
    assert abs(model.params["W1"].std() - std) < std / 10, "First layer weights do not seem right"
    assert np.all(model.params["b1"] == 0), "First layer biases do not seem right"
    assert abs(model.params["W2"].std() - std) < std / 10, "Second layer weights do not seem right"
    assert np.all(model.params["b2"] == 0), "Second layer biases do not seem right"

    model.params["W1"] = np.linspace(-0.7, 0.3, num=D * H).reshape(D, H)
    model.params["b1"] = np.linspace(-0.1, 0.9, num=H)
    model.params["W2"] = np.linspace(-0.3, 0.4, num=H * C).reshape(H, C)
    model.params["b2"] = np.linspace(-0.9, 0.1, num=C)
    X = np.linspace(-5.5, 4.5, num=N * D).reshape(D, N).T
    scores = model.loss(X)
    correct_scores = np.asarray(
        [
            [
                11.53165108,
                12.2917344,
                13.05181771,
                13.81190102,
                14.57198434,
                15.33206765,
                16.09215096,
            ],
            [
                12.05769098,
                12.74614105,
                13.43459113,
                14.1230412,
                14.81149128,
                15.49994135,
                16.18839143,
            ],
            [
                12.58373087,
                13.20054771,
                13.81736455,
                14.43418138,
                15.05099822,
                15.66781506,
                16.2846319,
            ],
        ]
    )
    scores_diff = np.abs(scores - correct_scores).sum()
    assert scores_diff < 1e-6, "Problem with test-time forward pass"

    y = np.asarray([0, 5, 1])
    loss, _ = model.loss(X, y)
    correct_loss = 3.4702243556
    assert abs(loss - correct_loss) < 1e-10, "Problem with training-time loss"

    model.reg = 1.0
    loss, _ = model.loss(X, y)
    correct_loss = 26.5948426952
    assert abs(loss - correct_loss) < 1e-10, "Problem with regularization loss"

    for reg in [0.0, 0.7]:
        model.reg = reg
        _, errors = model_gradient_errors(model, X, y)
        # No stated tolerance: the notebook's "errors around 1e-6 or less" for gradient checks.
        for name, error in errors.items():
            about(error, 1e-6, name)


def test_fully_connected_net_gradients():
    # The 2017 cell draws X, y from whatever state earlier cells left; the 2022 copy of the
    # cell seeds 231, as here, and notes "It is fine however to see an error for W2 on the
    # order of e-5 for the check when reg = 0.0" (a ReLU kink under the difference).
    X, y, sizes, hidden_dims = fc_check_data()
    recorded_losses = {0: 2.300479089768492, 3.14: 7.052114776533016}  # the 2022 copy's
    for reg in [0, 3.14]:
        model = FullyConnectedNet(
            hidden_dims, **sizes, reg=reg, weight_scale=5e-2, dtype=np.float64
        )
        loss, errors = model_gradient_errors(model, X, y)
        assert loss == pytest.approx(recorded_losses[reg], rel=1e-9)
        for name, error in errors.items():
            # "For gradient checking, you should expect to see errors around 1e-6 or less."
            about(error, 1e-5 if (reg, name) == (0, "W2") else 1e-6, name)


def linspace_4x5(low, high):
    return np.linspace(low, high, num=4 * 5).reshape(4, 5)


# The three update-rule cells: the same w and dw, the rule's state, and the expected new
# weights and state (4 x 5 each, as the notebook writes them).
UPDATE_RULE_CELLS = {
    "sgd_momentum": (
        sgd_momentum,
        {"learning_rate": 1e-3, "velocity": linspace_4x5(0.6, 0.9)},
        {
            "next_w": [
                [0.1406, 0.20738947, 0.27417895, 0.34096842, 0.40775789],
                [0.47454737, 0.54133684, 0.60812632, 0.67491579, 0.74170526],
                [0.80849474, 0.87528421, 0.94207368, 1.00886316, 1.07565263],
                [1.14244211, 1.20923158, 1.27602105, 1.34281053, 1.4096],
            ],
            "velocity": [
                [0.5406, 0.55475789, 0.56891579, 0.58307368, 0.59723158],
                [0.61138947, 0.62554737, 0.63970526, 0.65386316, 0.66802105],
                [0.68217895, 0.69633684, 0.71049474, 0.72465263, 0.73881053],
                [0.75296842, 0.76712632, 0.78128421, 0.79544211, 0.8096],
            ],
        },
        # No stated tolerance; the 2022 copy: "Should see relative errors around e-8 or less".
        lambda error: about(error, 1e-8),
    ),
    "rmsprop": (
        rmsprop,
        {"learning_rate": 1e-2, "cache": linspace_4x5(0.6, 0.9)},
        {
            "next_w": [
                [-0.39223849, -0.34037513, -0.28849239, -0.23659121, -0.18467247],
                [-0.132737, -0.08078555, -0.02881884, 0.02316247, 0.07515774],
                [0.12716641, 0.17918792, 0.23122175, 0.28326742, 0.33532447],
                [0.38739248, 0.43947102, 0.49155973, 0.54365823, 0.59576619],
            ],
            "cache": [
                [0.5976, 0.6126277, 0.6277108, 0.64284931, 0.65804321],
                [0.67329252, 0.68859723, 0.70395734, 0.71937285, 0.73484377],
                [0.75037008, 0.7659518, 0.78158892, 0.79728144, 0.81302936],
                [0.82883269, 0.84469141, 0.86060554, 0.87657507, 0.8926],
            ],
        },
        lambda error: below(error, 1e-7),
    ),  # "you should see errors less than 1e-7"
    "adam": (
        adam,
        {"learning_rate": 1e-2, "m": linspace_4x5(0.6, 0.9), "v": linspace_4x5(0.7, 0.5), "t": 5},
        {
            "next_w": [
                [-0.40094747, -0.34836187, -0.29577703, -0.24319299, -0.19060977],
                [-0.1380274, -0.08544591, -0.03286534, 0.01971428, 0.0722929],
                [0.1248705, 0.17744702, 0.23002243, 0.28259667, 0.33516969],
                [0.38774145, 0.44031188, 0.49288093, 0.54544852, 0.59801459],
            ],
            "v": [
                [
                    0.69966,
                    0.68908382,
                    0.67851319,
                    0.66794809,
                    0.65738853,
                ],
                [
                    0.64683452,
                    0.63628604,
                    0.6257431,
                    0.61520571,
                    0.60467385,
                ],
                [
                    0.59414753,
                    0.58362676,
                    0.57311152,
                    0.56260183,
                    0.55209767,
                ],
                [
                    0.54159906,
                    0.53110598,
                    0.52061845,
                    0.51013645,
                    0.49966,
                ],
            ],
            "m": [
                [0.48, 0.49947368, 0.51894737, 0.53842105, 0.55789474],
                [0.57736842, 0.59684211, 0.61631579, 0.63578947, 0.65526316],
                [0.67473684, 0.69421053, 0.71368421, 0.73315789, 0.75263158],
                [0.77210526, 0.79157895, 0.81105263, 0.83052632, 0.85],
            ],
        },
        lambda error: about(error, 1e-7),
    ),  # "you should see errors around 1e-7 or less"
}


@pytest.mark.parametrize("rule_name", UPDATE_RULE_CELLS)
def test_update_rule(rule_name):
    rule, config, expected, check = UPDATE_RULE_CELLS[rule_name]
    w, dw = linspace_4x5(-0.4, 0.6), linspace_4x5(-0.6, 0.4)
    config = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in config.items()}
    next_w, _ = rule(w, dw, config=config)
    for name, values in expected.items():
        check(rel_error(np.asarray(values), next_w if name == "next_w" else config[name]))


# --- BatchNormalization.ipynb -------------------------------------------------------------


def test_batchnorm_forward_train():
    D3 = 3
    a = two_layer_activations(N=200)
    # "Means should be close to zero and stds close to one"
    a_norm, _ = batchnorm_forward(a, np.ones(D3), np.zeros(D3), {"mode": "train"})
    np.testing.assert_allclose(a_norm.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(a_norm.std(axis=0), 1, atol=1e-6)
    # "Now means should be close to beta and stds close to gamma"
    gamma = np.asarray([1.0, 2.0, 3.0])
    beta = np.asarray([11.0, 12.0, 13.0])
    a_norm, _ = batchnorm_forward(a, gamma, beta, {"mode": "train"})
    np.testing.assert_allclose(a_norm.mean(axis=0), beta, rtol=1e-12)
    np.testing.assert_allclose(a_norm.std(axis=0), gamma, rtol=1e-6)


def test_batchnorm_forward_test_time():
    np.random.seed(231)
    N, D1, D2, D3 = 200, 50, 60, 3
    W1 = np.random.randn(D1, D2)
    W2 = np.random.randn(D2, D3)
    bn_param = {"mode": "train"}
    gamma = np.ones(D3)
    beta = np.zeros(D3)
    for _ in range(50):
        X = np.random.randn(N, D1)
        a = np.maximum(0, X.dot(W1)).dot(W2)
        batchnorm_forward(a, gamma, beta, bn_param)
    bn_param["mode"] = "test"
    X = np.random.randn(N, D1)
    a = np.maximum(0, X.dot(W1)).dot(W2)
    a_norm, _ = batchnorm_forward(a, gamma, beta, bn_param)
    # "Means should be close to zero and stds close to one, but will be noisier than
    # training-time forward passes."
    assert np.all(np.abs(a_norm.mean(axis=0)) < 0.2)
    assert np.all(np.abs(a_norm.std(axis=0) - 1) < 0.1)
    # Recorded (2017 and 2025 copies alike), to the printed digits: a missing running_var
    # starts at zeros as in the assignment's batchnorm_forward.
    np.testing.assert_allclose(
        a_norm.mean(axis=0), [-0.03927354, -0.04349152, -0.10452688], rtol=1e-7
    )
    np.testing.assert_allclose(a_norm.std(axis=0), [1.01531428, 1.01238373, 0.97819988], rtol=1e-7)


def test_batchnorm_backward():
    N, D = 4, 5
    # No stated tolerance; the 2022 copy: "relative errors between 1e-13 and 1e-8".
    for error in norm_backward_errors(
        batchnorm_forward, batchnorm_backward, (N, D), (D,), {"mode": "train"}
    ):
        below(error, 1e-8)


def test_batchnorm_backward_alt():
    N, D = 100, 500
    x, gamma, beta, dout = norm_check_inputs((N, D), (D,))
    bn_param = {"mode": "train"}
    _, cache = batchnorm_forward(x, gamma, beta, bn_param)
    dx1, dgamma1, dbeta1 = batchnorm_backward(dout, cache)
    dx2, dgamma2, dbeta2 = batchnorm_backward_alt(dout, cache)
    # "Your two implementations should compute nearly identical results" (recorded 1e-12).
    for first, second in ((dx1, dx2), (dgamma1, dgamma2), (dbeta1, dbeta2)):
        below(rel_error(first, second), 1e-11)


def test_fully_connected_net_with_batchnorm():
    check_batchnorm_net(
        lambda hidden_dims, sizes, reg: FullyConnectedNet(
            hidden_dims, **sizes, reg=reg, weight_scale=5e-2, dtype=np.float64, use_batchnorm=True
        )
    )


# --- Dropout.ipynb ------------------------------------------------------------------------


def test_dropout_forward():
    check_dropout_forward(dropout_forward, [0.3, 0.6, 0.75], lambda p: p)  # p drops


def test_dropout_backward():
    error, dx = dropout_backward_error(dropout_forward, dropout_backward, 0.8)
    # No stated tolerance; the 2022 copy: "Error should be around e-10 or less."
    about(error, 1e-10)
    assert abs((dx == 0).mean() - 0.8) < 0.15  # 100 units, p = 0.8 of them dropped


def test_fully_connected_net_with_dropout():
    check_dropout_net(
        lambda hidden_dims, sizes, dropout: FullyConnectedNet(
            hidden_dims, **sizes, weight_scale=5e-2, dtype=np.float64, dropout=dropout, seed=123
        ),
        [0, 0.25, 0.5],
    )


# --- cs231n/data_utils.py -----------------------------------------------------------------


def test_get_cifar10_data_from_a_distnet_dataset(tiny_dataset):
    from distnet.cs231n.data_utils import get_CIFAR10_data
    from distnet.data.arrays import load_cifar10
    from distnet.errors import InvalidInput

    full = load_cifar10(tiny_dataset)
    data = get_CIFAR10_data(num_training=200, num_validation=50, num_test=40, path=tiny_dataset)
    assert list(data) == ["X_train", "y_train", "X_val", "y_val", "X_test", "y_test"]
    for split, n in (("train", 200), ("val", 50), ("test", 40)):
        assert data[f"X_{split}"].shape == (n, 3, 32, 32)
        np.testing.assert_array_equal(data[f"X_{split}"], full[f"X_{split}"][:n])
        np.testing.assert_array_equal(data[f"y_{split}"], full[f"y_{split}"][:n])
    raw = get_CIFAR10_data(
        num_training=200, num_validation=50, num_test=40, subtract_mean=False, path=tiny_dataset
    )
    mean_image = raw["X_train"][0] - data["X_train"][0]
    np.testing.assert_allclose(
        raw["X_test"] - data["X_test"], np.broadcast_to(mean_image, data["X_test"].shape), atol=1e-4
    )
    too_many = len(full["y_val"]) + 1
    with pytest.raises(InvalidInput, match=f"asked for {too_many} val images, the dataset has"):
        get_CIFAR10_data(num_training=10, num_validation=too_many, num_test=10, path=tiny_dataset)
