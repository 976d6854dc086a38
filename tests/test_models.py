"""Models: gradients against numerical ones (float64), shapes, errors, state, dtypes."""

import pickle

import numpy as np
import pytest

from distnet.errors import DistnetError
from distnet.gradcheck import check_model_gradients, eval_numerical_gradient, rel_error
from distnet.models import FullyConnectedNet, TwoLayerNet
from distnet.params import FlatParams

N, D, C = 6, 8, 10


def batch(seed=0, n=N, d=D):
    rng = np.random.default_rng([seed, 99])
    return rng.standard_normal((n, d)), rng.integers(C, size=n)


def fc(hidden=(10, 7), **kwargs):
    kwargs = {
        "input_dim": D,
        "num_classes": C,
        "weight_scale": 0.3,
        "dtype": np.float64,
        "init_seed": 0,
        **kwargs,
    }
    return FullyConnectedNet(list(hidden), **kwargs)


# --- gradient checks -----------------------------------------------------------------


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("dropout", [0, 0.25])
@pytest.mark.parametrize("reg", [0.0, 0.7])
def test_fully_connected_net_gradients(batchnorm, dropout, reg):
    model = fc(use_batchnorm=batchnorm, dropout=dropout, reg=reg, seed=123)
    errors = check_model_gradients(model, *batch())
    expected = {"W1", "b1", "W2", "b2", "W3", "b3"} | (
        {"gamma1", "beta1", "gamma2", "beta2"} if batchnorm else set()
    )
    assert set(errors) == expected
    assert max(errors.values()) < (1e-5 if batchnorm or dropout else 1e-6), errors


@pytest.mark.parametrize("reg", [0.0, 0.5])
def test_two_layer_net_gradients(reg):
    model = TwoLayerNet(
        input_dim=D,
        hidden_dim=12,
        num_classes=C,
        weight_scale=0.3,
        reg=reg,
        dtype=np.float64,
        init_seed=1,
    )
    errors = check_model_gradients(model, *batch(1))
    assert set(errors) == {"W1", "b1", "W2", "b2"}
    assert max(errors.values()) < 1e-6, errors


def test_empty_hidden_dims_is_a_linear_softmax_classifier():
    model = fc(hidden=(), reg=0.1)
    X, y = batch(2)
    assert list(model.params) == ["W1", "b1"] and model.num_layers == 1
    W, b = model.params["W1"], model.params["b1"]
    assert rel_error(model.loss(X), X @ W + b) < 1e-12
    assert max(check_model_gradients(model, X, y).values()) < 1e-6


def test_check_model_gradients_equals_rel_error_and_catches_wrong_gradients():
    model = fc()
    X, y = batch(3)
    errors = check_model_gradients(model, X, y)
    _, grads = model.loss(X, y)
    num = eval_numerical_gradient(lambda _: model.loss(X, y)[0], model.params["b3"], verbose=False)
    # b3's entries are well above the noise floor: the plain relative error applies.
    assert np.min(np.abs(num)) > 1e-2 and errors["b3"] == pytest.approx(rel_error(num, grads["b3"]))

    class OffByALittle(FullyConnectedNet):
        def loss(self, X, y=None, **kwargs):
            result = super().loss(X, y, **kwargs)
            if y is not None:  # a 1e-4 relative error in W2's largest entry
                g = result[1]["W2"]
                g[np.unravel_index(np.argmax(np.abs(g)), g.shape)] *= 1.0001
            return result

    broken = OffByALittle([10, 7], input_dim=D, weight_scale=0.3, dtype=np.float64, init_seed=0)
    errors = check_model_gradients(broken, X, y)
    assert errors["W2"] > 1e-5 and errors["W1"] < 1e-6


def test_check_model_gradients_needs_float64():
    with pytest.raises(ValueError, match="float64"):
        check_model_gradients(fc(dtype=np.float32), *batch())


# --- forward, regularization, dropout, batchnorm -------------------------------------


def test_scores_match_an_independent_forward_pass():
    model = fc(use_batchnorm=True)
    X, _ = batch(4)
    p = model.params
    h = X
    for i in (1, 2):  # test mode: batchnorm with the initial running stats (0 mean, 1 var)
        h = np.maximum(
            (h @ p[f"W{i}"] + p[f"b{i}"]) / np.sqrt(1 + 1e-5) * p[f"gamma{i}"] + p[f"beta{i}"], 0
        )
    assert rel_error(model.loss(X), h @ p["W3"] + p["b3"]) < 1e-12


def test_regularization_adds_half_reg_sum_of_squared_weights_only():
    X, y = batch(5)
    plain, regular = fc(use_batchnorm=True), fc(use_batchnorm=True, reg=0.3)
    loss0, grads0 = plain.loss(X, y)
    loss1, grads1 = regular.loss(X, y)
    weights = [regular.params[f"W{i}"] for i in (1, 2, 3)]
    assert loss1 - loss0 == pytest.approx(0.5 * 0.3 * sum((W**2).sum() for W in weights), rel=1e-12)
    for name in regular.params:
        extra = 0.3 * regular.params[name] if name.startswith("W") else 0
        assert np.allclose(grads1[name], grads0[name] + extra, rtol=1e-12, atol=1e-15), name


def test_dropout_masks_follow_the_seed_and_differ_between_layers():
    X, y = batch(6, n=40)
    model = fc(hidden=(30, 30), dropout=0.5, seed=5)
    first, again = model.loss(X, y)[0], model.loss(X, y)[0]
    model.dropout_param["seed"] = (1, 2, 3, 4)  # e.g. (seed, epoch, step, worker)
    other = model.loss(X, y)[0]
    assert first == again and other != first
    layer1, layer2 = (model._layer_dropout_param(i)["seed"] for i in (1, 2))
    assert layer1 == [1, 2, 3, 4, 1] and layer2 == [1, 2, 3, 4, 2]
    assert np.array_equal(model.loss(X), model.loss(X))  # test mode: no dropout
    assert model.dropout_param["mode"] == "test"


def test_batchnorm_state_round_trip_and_use():
    model = fc(use_batchnorm=True)
    state = model.get_bn_state()
    assert state.shape == (2 * (10 + 7),) and state.dtype == np.float64
    assert np.array_equal(
        state, np.concatenate([np.zeros(10), np.ones(10), np.zeros(7), np.ones(7)])
    )
    X, y = batch(7)
    scores = model.loss(X)
    model.loss(X + 3, y)  # a train step moves the running statistics
    moved = model.get_bn_state()
    assert not np.array_equal(moved, state) and not np.array_equal(model.loss(X), scores)
    model.set_bn_state(state)
    assert np.array_equal(model.get_bn_state(), state) and np.array_equal(model.loss(X), scores)
    with pytest.raises(ValueError, match=r"expected \(34,\)"):
        model.set_bn_state(np.zeros(33))
    assert fc().get_bn_state().shape == (0,)


# --- inputs and errors ---------------------------------------------------------------


def test_images_and_flat_rows_give_the_same_scores():
    model = TwoLayerNet(hidden_dim=5, weight_scale=1e-2, init_seed=0)
    images = np.random.default_rng(8).integers(0, 256, size=(3, 3, 32, 32), dtype=np.uint8)
    assert np.array_equal(model.loss(images), model.loss(images.reshape(3, -1)))


@pytest.mark.parametrize(
    "X", [np.zeros((4, 9)), np.zeros((4, 2, 3)), np.zeros(8), np.zeros((4, 4, 4))]
)
def test_wrong_input_shape_is_a_clear_error(X):
    with pytest.raises(ValueError, match=r"X has shape .* takes \(N, 8\)"):
        fc().loss(X)


@pytest.mark.parametrize(
    "y, message",
    [
        (np.array([0, 1, 2, 3, 4, 10]), "label 10 is out of range"),
        (np.array([0, -1, 2, 3, 4, 5]), "label -1"),
        (np.array([0, 1, 2]), "shape"),
    ],
)
def test_bad_labels_are_a_clear_error(y, message):
    with pytest.raises(DistnetError, match=message):
        fc().loss(batch()[0], y)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"reg": -0.1}, "reg must be a non-negative"),
        ({"dropout": 1.0}, "dropout"),
        ({"hidden": (10, 0)}, r"hidden_dims\[1\]"),
        ({"dtype": np.int32}, "float32 or float64"),
        ({"weight_scale": -1.0}, "weight_scale"),
    ],
)
def test_bad_hyperparameters_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fc(**kwargs)
    with pytest.raises(ValueError, match="reg"):
        fc().reg = -1


# --- parameters, dtypes, distribution ------------------------------------------------


def test_init_follows_the_assignment():
    model = TwoLayerNet(input_dim=400, hidden_dim=300, weight_scale=1e-3, init_seed=4)
    p = model.params
    assert {k: p[k].shape for k in p} == {
        "W1": (400, 300),
        "b1": (300,),
        "W2": (300, 10),
        "b2": (10,),
    }
    assert abs(p["W1"].std() - 1e-3) < 5e-5 and abs(p["W1"].mean()) < 1e-5
    assert np.all(p["b1"] == 0) and np.all(p["b2"] == 0)
    again = TwoLayerNet(input_dim=400, hidden_dim=300, weight_scale=1e-3, init_seed=4)
    assert np.array_equal(p.vector, again.params.vector)
    bn = fc(use_batchnorm=True).params
    assert np.all(bn["gamma1"] == 1) and np.all(bn["beta2"] == 0)


def test_default_dtypes_are_the_assignments():
    # Its TwoLayerNet notebook checks scores to 1e-6 and the loss to 1e-10: float64.
    assert TwoLayerNet(input_dim=D, hidden_dim=4).params.vector.dtype == np.float64
    assert FullyConnectedNet([4], input_dim=D).params.vector.dtype == np.float32
    assert TwoLayerNet(input_dim=D, hidden_dim=4, dtype=np.float32).dtype == np.float32


def test_float32_stays_float32():
    model = FullyConnectedNet(
        [16, 8], input_dim=D, use_batchnorm=True, dropout=0.2, reg=np.float64(0.1), seed=0
    )
    X, y = batch(9)
    loss, grads = model.loss(X, y)  # float64 X is converted once, at the input
    assert model.loss(X).dtype == np.float32 and grads.vector.dtype == np.float32
    assert isinstance(loss, float) and model.get_bn_state().dtype == np.float32


def test_params_assignment_stays_in_the_flat_buffer():
    model = fc()
    vector, X = model.params.vector, batch(10)[0]
    model.params["W3"] = np.zeros((7, C))
    model.params["b3"] = np.arange(C)
    assert np.array_equal(model.loss(X), np.tile(np.arange(C), (N, 1)))
    model.params = {name: np.ones_like(value) for name, value in model.params.items()}
    assert model.params.vector is vector and np.all(vector == 1)
    other = model.params.copy()
    model.params = other  # a FlatParams of the same layout is adopted, not copied
    assert model.params is other
    with pytest.raises(ValueError, match="exactly"):
        model.params = {"W1": np.ones((D, 10))}


def test_gradient_buffer_can_be_reused():
    model = fc(use_batchnorm=True, reg=0.2)
    X, y = batch(11)
    _, fresh = model.loss(X, y)
    out = model.params.zeros_like()
    _, grads = model.loss(X, y, grads_out=out)
    assert grads is out and np.array_equal(out.vector, fresh.vector)
    with pytest.raises(ValueError, match="layout"):
        model.loss(X, y, grads_out=FlatParams({"W1": (2,)}, np.float64))


def test_pickled_model_keeps_flat_views():
    model = fc(use_batchnorm=True, dropout=0.3, seed=1)
    clone = pickle.loads(pickle.dumps(model))
    X, y = batch(12)
    assert clone.loss(X, y)[0] == model.loss(X, y)[0]
    clone.params["W1"] = np.zeros((D, 10))
    assert not clone.params.vector[: D * 10].any() and model.params.vector[: D * 10].any()
