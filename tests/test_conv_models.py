"""Conv models: gradients against numerical ones (float64), the assignment's sanity checks,
overfitting, the flat parameter layout and bad block specs. No Ray."""

import math
import pickle

import numpy as np
import pytest

from distnet.checkpoint import ModelSpec, TrainState, load_checkpoint, save_checkpoint
from distnet.errors import InvalidInput
from distnet.gradcheck import check_model_gradients, rel_error
from distnet.layers import (
    affine_forward,
    conv_forward_naive,
    max_pool_forward_naive,
    relu_forward,
)
from distnet.models import (
    Affine,
    Conv,
    ConvNet,
    Dropout,
    Pool,
    ThreeLayerConvNet,
    check_blocks,
    parse_blocks,
)
from distnet.solver import Solver


def images(n, shape, seed=0):
    rng = np.random.default_rng([seed, 77])
    return rng.standard_normal((n, *shape)), rng.integers(10, size=n)


def small_three_layer(**kwargs):
    kwargs = {
        "input_dim": (3, 8, 8),
        "num_filters": 3,
        "filter_size": 3,
        "hidden_dim": 7,
        "weight_scale": 0.3,
        "dtype": np.float64,
        "init_seed": 0,
        **kwargs,
    }
    return ThreeLayerConvNet(**kwargs)


def normed_net(norm, groups=None, **kwargs):
    """Odd, non-square images; stride 1 and 2, pad 0 and 1; pools; dropout in the head."""
    blocks = [
        Conv(4, 3, norm=norm, groups=groups),
        Pool(2),
        Conv(4, 3, stride=2, pad=1, norm=norm, groups=groups),
        Conv(6, 1, pad=0, norm=norm, groups=groups),
        Affine(6),
        Dropout(0.3),
    ]
    kwargs = {
        "input_dim": (2, 6, 10),
        "weight_scale": None,
        "dtype": np.float64,
        "init_seed": 1,
        "seed": 3,
        **kwargs,
    }
    return ConvNet(blocks, **kwargs)


# --- gradient checks -----------------------------------------------------------------


@pytest.mark.parametrize("reg", [0.0, 0.5])
def test_three_layer_conv_net_gradients(reg):
    model = small_three_layer(reg=reg)
    errors = check_model_gradients(model, *images(2, (3, 8, 8)))
    assert set(errors) == {"W1", "b1", "W2", "b2", "W3", "b3"}
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("norm, groups", [("batchnorm", None), ("groupnorm", 2)])
def test_conv_net_with_normalization_gradients(norm, groups):
    model = normed_net(norm, groups, reg=0.1)
    X, y = images(4, (2, 6, 10), seed=1)
    errors = check_model_gradients(model, X, y, max_checks=60)
    assert set(errors) == {f"{kind}{i}" for i in (1, 2, 3, 4, 5) for kind in ("W", "b")} | {
        f"{kind}{i}" for i in (1, 2, 3) for kind in ("gamma", "beta")
    }
    assert max(errors.values()) < 1e-5, errors


def test_check_catches_a_wrong_conv_gradient():
    class OffByALittle(ThreeLayerConvNet):
        def loss(self, X, y=None, **kwargs):
            result = super().loss(X, y, **kwargs)
            if y is not None:  # a 1e-4 relative error in W1's largest entry
                g = result[1]["W1"]
                g[np.unravel_index(np.argmax(np.abs(g)), g.shape)] *= 1.0001
            return result

    broken = OffByALittle(
        input_dim=(3, 8, 8),
        num_filters=3,
        filter_size=3,
        hidden_dim=7,
        weight_scale=0.3,
        dtype=np.float64,
        init_seed=0,
    )
    errors = check_model_gradients(broken, *images(2, (3, 8, 8)))
    assert errors["W1"] > 1e-5 and errors["W2"] < 1e-6


# --- the assignment's sanity checks and forward pass ----------------------------------


def test_initial_loss_is_log_10_and_grows_with_reg():
    # The ConvolutionalNetworks notebook's check on the default model (its 50 images cut to
    # 10: with weights of scale 1e-3 the loss is log(10) for any batch).
    model = ThreeLayerConvNet(init_seed=0)
    X, y = images(10, (3, 32, 32))
    loss, _ = model.loss(X, y)
    assert loss == pytest.approx(math.log(10), abs=1e-3)
    model.reg = 0.5
    assert model.loss(X, y)[0] > loss + 0.1


def test_scores_match_the_naive_layers():
    model = small_three_layer(input_dim=(3, 6, 4), filter_size=5)
    p = model.params
    X, _ = images(3, (3, 6, 4))
    h = relu_forward(conv_forward_naive(X, p["W1"], p["b1"], {"stride": 1, "pad": 2})[0])[0]
    h = max_pool_forward_naive(h, {"pool_height": 2, "pool_width": 2, "stride": 2})[0]
    h = relu_forward(affine_forward(h, p["W2"], p["b2"])[0])[0]
    assert rel_error(model.loss(X), affine_forward(h, p["W3"], p["b3"])[0]) < 1e-12


def test_init_follows_the_assignment():
    model = ThreeLayerConvNet(init_seed=4)
    p = model.params
    assert [(name, shape) for name, shape, _, _ in p.layout] == [
        ("W1", (32, 3, 7, 7)),
        ("b1", (32,)),
        ("W2", (32 * 16 * 16, 100)),
        ("b2", (100,)),
        ("W3", (100, 10)),
        ("b3", (10,)),
    ]
    assert abs(p["W2"].std() - 1e-3) < 2e-5 and not p["b1"].any() and not p["b3"].any()
    assert model.dtype == np.float32 and model.num_layers == 3
    np.random.seed(5)  # without init_seed the weights come from NumPy's global generator
    first = ThreeLayerConvNet(num_filters=2, hidden_dim=3).params.vector
    np.random.seed(5)
    assert np.array_equal(first, ThreeLayerConvNet(num_filters=2, hidden_dim=3).params.vector)


def test_he_initialization_and_normalization_parameters():
    model = ConvNet(
        [Conv(64, 3, norm="batchnorm"), Affine(200)],
        input_dim=(8, 6, 6),
        weight_scale=None,
        init_seed=0,
    )
    p = model.params
    assert p["W1"].std() == pytest.approx(math.sqrt(2 / (8 * 9)), rel=0.05)
    assert p["W2"].std() == pytest.approx(math.sqrt(2 / (64 * 36)), rel=0.05)
    assert np.all(p["gamma1"] == 1) and not p["beta1"].any()


def test_training_overfits_100_samples():
    X, y = images(100, (3, 12, 12), seed=2)
    X_val, y_val = images(50, (3, 12, 12), seed=3)
    model = ThreeLayerConvNet(
        input_dim=(3, 12, 12),
        num_filters=8,
        filter_size=3,
        hidden_dim=100,
        weight_scale=0.1,
        init_seed=0,
    )
    data = {"X_train": X.astype(np.float32), "y_train": y, "X_val": X_val, "y_val": y_val}
    solver = Solver(
        model,
        data,
        num_epochs=25,
        batch_size=25,
        update_rule="adam",
        optim_config={"learning_rate": 3e-3},
        verbose=False,
        seed=0,
    )
    solver.train()
    # Random labels: fitting them is memorising, and nothing carries over to new images.
    assert solver.train_acc_history[-1] == 1.0 and solver.loss_history[-1] < 0.1
    assert solver.train_acc_history[0] < 0.4 and solver.best_val_acc < 0.4


# --- flat parameters, state, dtypes -------------------------------------------------


def test_flat_layout_round_trips_through_a_checkpoint(tmp_path):
    model = normed_net("batchnorm", dtype=np.float32)
    X, y = images(4, (2, 6, 10))
    model.loss(X, y)  # move the running statistics away from (0, 1)
    bn_state = model.get_bn_state()
    assert bn_state.shape == (2 * (4 + 4 + 6),) and model.params.vector.dtype == np.float32
    state = TrainState(
        step=1,
        epoch=0,
        params=model.params.vector,
        opt_state={},
        bn_state=bn_state,
        best_params=None,
        best_val_acc=0.0,
        history={},
        config={},
    )
    path = save_checkpoint(tmp_path, state, keep=1)
    loaded = load_checkpoint(path, ModelSpec.like(model.params.vector, bn_state))

    fresh = normed_net("batchnorm", dtype=np.float32, init_seed=9)
    assert not np.array_equal(fresh.loss(X), model.loss(X))
    fresh.params.set_vector(loaded.params)
    fresh.set_bn_state(loaded.bn_state)
    assert np.array_equal(fresh.loss(X), model.loss(X))
    with pytest.raises(InvalidInput, match=r"expected \(28,\)"):
        fresh.set_bn_state(np.zeros(27, np.float32))


def test_views_gradient_buffer_and_pickle_share_the_flat_vector():
    model = normed_net("groupnorm", groups=2)
    X, y = images(4, (2, 6, 10))
    vector = model.params.vector
    model.params["W5"] = np.zeros((6, 10))
    assert not vector[-6 * 10 - 10 : -10].any() and model.get_bn_state().shape == (0,)
    _, fresh = model.loss(X, y)
    out = model.params.zeros_like()
    _, grads = model.loss(X, y, grads_out=out)
    assert grads is out and np.array_equal(out.vector, fresh.vector)
    clone = pickle.loads(pickle.dumps(model))
    assert clone.loss(X, y)[0] == model.loss(X, y)[0]


def test_batchnorm_state_moves_in_training_and_is_used_in_test():
    model = normed_net("batchnorm", seed=None)
    X, y = images(4, (2, 6, 10))
    state, scores = model.get_bn_state(), model.loss(X)
    assert np.array_equal(
        state,
        np.concatenate([np.zeros(4), np.ones(4), np.zeros(4), np.ones(4), np.zeros(6), np.ones(6)]),
    )
    model.loss(X + 2, y)
    assert not np.array_equal(model.get_bn_state(), state)
    model.set_bn_state(state)
    assert np.array_equal(model.loss(X), scores)


def test_dropout_masks_follow_the_seed():
    model = normed_net(None, seed=5)
    X, y = images(4, (2, 6, 10))
    first, again = model.loss(X, y)[0], model.loss(X, y)[0]
    model.dropout_param["seed"] = (1, 2, 3, 4)  # (seed, epoch, step, worker), as workers set it
    assert first == again and model.loss(X, y)[0] != first
    assert np.array_equal(model.loss(X), model.loss(X)) and model.use_dropout


def test_float32_stays_float32_and_rows_equal_images():
    model = normed_net("batchnorm", dtype=np.float32)
    X, y = images(4, (2, 6, 10))
    loss, grads = model.loss(X, y)
    assert isinstance(loss, float) and grads.vector.dtype == np.float32
    assert model.loss(X).dtype == np.float32 and model.get_bn_state().dtype == np.float32
    # The data reader's rows are the images' C, H, W planes: the same scores.
    assert np.array_equal(model.loss(X.reshape(4, -1)), model.loss(X))


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "blocks, input_dim, message",
    [
        (
            [Pool(2)],
            (3, 7, 8),
            r"block 0 \(pool 2x2 stride 2\) on 3x7x8 images: windows of "
            r"height 2 at stride 2 do not tile the input height 7",
        ),
        ([Pool(3, stride=2)], (3, 7, 8), r"block 0 .*width 3 at stride 2 do not tile"),
        (
            [Conv(4), Conv(4, 3, stride=2)],
            (3, 8, 8),
            r"block 1 \(conv 4 3x3 stride 2 pad 1\) on 4x8x8 images: .* padded input height 10",
        ),
        ([Conv(4, 5, pad=0)], (3, 4, 4), r"block 0 .*window exceeds the input height 4"),
        ([Affine(10), Conv(4)], (3, 8, 8), r"block 1 \(conv .*follows an affine block"),
        ([Affine(10), Pool()], (3, 8, 8), r"block 1 \(pool .*follows an affine block"),
    ],
)
def test_blocks_that_do_not_fit_name_the_block(blocks, input_dim, message):
    with pytest.raises(InvalidInput, match=message):
        ConvNet(blocks, input_dim=input_dim)


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            {"type": "conv", "filters": 6, "norm": "groupnorm", "groups": 4},
            r"block 1: conv block: groups 4 does not divide its 6 channels",
        ),
        ({"type": "conv", "filters": 6, "norm": "groupnorm"}, r"groups must be an integer >= 1"),
        ({"type": "conv", "filters": 6, "groups": 2}, r"groups applies only with norm"),
        ({"type": "conv", "filters": 6, "norm": "layernorm"}, r"norm must be one of"),
        ({"type": "conv", "filters": 0}, r"block 1: conv block: filters must be an integer >= 1"),
        ({"type": "conv", "filters": 4, "stride": True}, r"stride must be an integer"),
        ({"type": "conv", "filters": 4, "pad": -1}, r"pad must be an integer >= 0"),
        ({"type": "conv"}, r"block 1 \(conv\): missing filters"),
        ({"type": "conv", "filters": 4, "kernel": 3}, r"block 1 \(conv\): unknown key 'kernel'"),
        ({"type": "dropout", "p": 1.0}, r"p must be a number in \[0, 1\)"),
        ({"type": "affine", "units": 2.5}, r"units must be an integer"),
        ({"type": "batchnorm"}, r"block 1: type must be one of \['conv', 'pool', 'dropout'"),
        ({"filters": 4}, r"block 1: type must be one of"),
        ("conv", r"block 1: expected a block or a table"),
    ],
)
def test_bad_block_specs_are_rejected_naming_the_block(spec, message):
    with pytest.raises(InvalidInput, match=message):
        ConvNet([{"type": "pool", "size": 1}, spec], input_dim=(3, 8, 8))


def test_block_tables_parse_into_blocks():
    assert parse_blocks(
        [
            {"type": "conv", "filters": 8, "size": 5, "norm": "groupnorm", "groups": 2},
            {"type": "pool", "size": 3, "stride": 1},
            {"type": "affine", "units": 4},
            {"type": "dropout", "p": 0},
        ]
    ) == [Conv(8, 5, 1, 2, "groupnorm", 2), Pool(3, 1), Affine(4), Dropout(0.0)]
    assert check_blocks(
        [Conv(4, 5, stride=2, pad=0), Pool(3, 1), Dropout(0.5), Affine(7)], (3, 11, 9)
    ) == [(3, 11, 9), (4, 4, 3), (4, 2, 1), (4, 2, 1), (7,)]
    with pytest.raises(InvalidInput, match="blocks must be a list"):
        ConvNet({"type": "conv", "filters": 4})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"filter_size": 4}, r"block 1 \(pool 2x2 stride 2\) on 32x31x31 images"),  # even filter
        ({"input_dim": (3, 15, 16)}, r"do not tile the input height 15"),
        ({"input_dim": (3, 32)}, r"input_dim must be \(C, H, W\)"),
        ({"num_filters": 0}, r"filters must be an integer >= 1"),
        ({"dtype": np.int32}, "float32 or float64"),
        ({"weight_scale": -1.0}, "weight_scale"),
        ({"reg": -0.1}, "reg must be a non-negative"),
    ],
)
def test_bad_three_layer_settings_are_rejected(kwargs, message):
    with pytest.raises(InvalidInput, match=message):
        ThreeLayerConvNet(**kwargs)


@pytest.mark.parametrize(
    "X", [np.zeros((2, 3, 8, 9)), np.zeros((2, 4, 8, 8)), np.zeros((2, 191)), np.zeros((3, 8, 8))]
)
def test_wrong_image_shape_is_a_clear_error(X):
    with pytest.raises(
        InvalidInput,
        match=r"X has shape .* takes \(N, 3, 8, 8\) images or "
        r"\(N, 192\) rows",
    ):
        small_three_layer().loss(X)
