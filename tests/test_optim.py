"""Update rules against trajectories computed independently with the textbook formulas,
values worked out by hand, and the settings they refuse."""

import numpy as np
import pytest

from distnet import optim


def reference_trajectory(rule, w, grads, hp):
    """Weights after each step, following the formulas literally on float64 arrays."""
    w, state, out = w.astype(np.float64), {}, []
    for t, g in enumerate(grads, start=1):
        lr = hp["learning_rate"]
        if rule == "sgd":
            w = w - lr * g
        elif rule == "sgd_momentum":
            v = hp["momentum"] * state.get("v", 0) - lr * g
            w, state["v"] = w + v, v
        elif rule == "sgd_nesterov":  # CS231n's form, with the previous velocity
            v_prev = state.get("v", 0)
            v = hp["momentum"] * v_prev - lr * g
            w, state["v"] = w - hp["momentum"] * v_prev + (1 + hp["momentum"]) * v, v
        elif rule == "rmsprop":
            c = hp["decay_rate"] * state.get("c", 0) + (1 - hp["decay_rate"]) * g**2
            w, state["c"] = w - lr * g / (np.sqrt(c) + hp["epsilon"]), c
        else:  # adam, adamw
            m = hp["beta1"] * state.get("m", 0) + (1 - hp["beta1"]) * g
            v = hp["beta2"] * state.get("v", 0) + (1 - hp["beta2"]) * g**2
            m_hat, v_hat = m / (1 - hp["beta1"] ** t), v / (1 - hp["beta2"] ** t)
            decay = lr * hp.get("weight_decay", 0) * w
            w, state["m"], state["v"] = (
                w - decay - lr * m_hat / (np.sqrt(v_hat) + hp["epsilon"]),
                m,
                v,
            )
        out.append(w)
    return out


CASES = [  # rule, settings (the rest are the assignment's defaults)
    ("sgd", {}),
    ("sgd", {"learning_rate": 0.3}),
    ("sgd_momentum", {}),
    ("sgd_momentum", {"learning_rate": 0.1, "momentum": 0.5}),
    ("sgd_nesterov", {"learning_rate": 0.1}),
    ("rmsprop", {}),
    ("rmsprop", {"learning_rate": 1e-3, "decay_rate": 0.9, "epsilon": 1e-6}),
    ("adam", {}),
    ("adam", {"learning_rate": 1e-2, "beta1": 0.5, "beta2": 0.9}),
    ("adamw", {}),
    ("adamw", {"learning_rate": 1e-2, "weight_decay": 0.1}),
    (
        "adamw",
        {"learning_rate": 5e-2, "beta1": 0.8, "beta2": 0.99, "epsilon": 1e-6, "weight_decay": 5e-2},
    ),
    ("adamw", {"learning_rate": 1e-2, "beta1": 0.0, "beta2": 0.5, "weight_decay": 0.0}),
    ("sgd_nesterov", {}),
    ("sgd_nesterov", {"learning_rate": 0.3, "momentum": 0.5}),
    ("sgd_nesterov", {"learning_rate": 1e-3, "momentum": 0.99}),
]
EXPECTED_DEFAULTS = {
    "sgd": {"learning_rate": 1e-2},
    "sgd_momentum": {"learning_rate": 1e-2, "momentum": 0.9},
    "sgd_nesterov": {"learning_rate": 1e-2, "momentum": 0.9},
    "rmsprop": {"learning_rate": 1e-2, "decay_rate": 0.99, "epsilon": 1e-8},
    "adam": {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8},
    "adamw": {
        "learning_rate": 1e-3,
        "beta1": 0.9,
        "beta2": 0.999,
        "epsilon": 1e-8,
        "weight_decay": 1e-2,
    },
}


@pytest.mark.parametrize("rule, settings", CASES)
def test_rule_matches_reference_trajectory(rule, settings):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((4, 5))
    grads = [rng.standard_normal((4, 5)) for _ in range(5)]
    expected = reference_trajectory(rule, w0, grads, {**EXPECTED_DEFAULTS[rule], **settings})
    w, config = w0.copy(), dict(settings)
    for g, want in zip(grads, expected, strict=True):
        w, config = optim.RULES[rule](w, g, config)
        assert np.allclose(w, want, rtol=1e-12, atol=1e-14)
    assert {k: config[k] for k in EXPECTED_DEFAULTS[rule]} == {
        **EXPECTED_DEFAULTS[rule],
        **settings,
    }


@pytest.mark.parametrize("rule, settings", CASES)
def test_float32_stays_float32_and_close_to_reference(rule, settings):
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal(50).astype(np.float32)
    grads = [rng.standard_normal(50).astype(np.float32) for _ in range(3)]
    expected = reference_trajectory(rule, w0, grads, {**EXPECTED_DEFAULTS[rule], **settings})
    w, config = w0.copy(), dict(settings)
    for g in grads:
        w, config = optim.RULES[rule](w, g, config)
    assert w.dtype == np.float32
    assert all(v.dtype == np.float32 for v in config.values() if isinstance(v, np.ndarray))
    assert np.allclose(w, expected[-1], rtol=1e-5, atol=1e-6)


def test_adam_bias_correction_makes_the_first_step_learning_rate_sized():
    # With m_hat = dw and v_hat = dw**2 on step 1, each weight moves by ~lr * sign(dw),
    # whatever the gradient's scale; without correction the step would be ~0.1/0.0316 lr.
    w, dw = np.zeros(4), np.array([1e-3, -2.0, 50.0, -1e-2])
    next_w, config = optim.adam(w.copy(), dw, {"learning_rate": 0.01})
    assert config["t"] == 1
    assert np.allclose(next_w, -0.01 * np.sign(dw), rtol=1e-4)
    next_w, config = optim.adam(next_w, dw, config)
    assert config["t"] == 2 and np.allclose(next_w, -0.02 * np.sign(dw), rtol=1e-4)


def test_adamw_without_decay_is_adam():
    rng = np.random.default_rng(2)
    w, grads = rng.standard_normal(10), [rng.standard_normal(10) for _ in range(3)]
    a, b, ca, cb = w.copy(), w.copy(), {}, {"weight_decay": 0.0}
    for g in grads:
        a, ca = optim.adam(a, g, ca)
        b, cb = optim.adamw(b, g, cb)
    assert np.array_equal(a, b)


def test_adamw_first_step_by_hand():
    # m = 0.05, m_hat = 0.5, v = 0.00025, v_hat = 0.25: the Adam step is 0.5 / (0.5 + 1e-8)
    w, config = optim.adamw(np.array([1.0]), np.array([0.5]), {"learning_rate": 0.1})
    assert w[0] == pytest.approx(1.0 - 0.1 * (0.5 / (0.5 + 1e-8) + 1e-2), rel=1e-12)
    assert config["t"] == 1


def test_adamw_decays_weights_without_a_gradient():
    # Zero gradient: Adam's part is 0 / (0 + eps) = 0 and only the decoupled decay remains.
    config = {"learning_rate": 0.1, "weight_decay": 0.5}
    w, _ = optim.adamw(np.array([2.0, -4.0]), np.zeros(2), config)
    np.testing.assert_allclose(w, [2.0 * 0.95, -4.0 * 0.95], rtol=1e-12)


def test_nesterov_two_steps_by_hand():
    # v = -0.05, w = 1 - 1.9 * 0.05 = 0.905; then v = -0.095, w = 0.905 + 0.045 - 1.9 * 0.095
    w, config = optim.sgd_nesterov(np.array([1.0]), np.array([0.5]), {"learning_rate": 0.1})
    assert w[0] == pytest.approx(0.905, rel=1e-12)
    w, config = optim.sgd_nesterov(w, np.array([0.5]), config)
    assert w[0] == pytest.approx(0.7695, rel=1e-12)
    assert config["velocity"][0] == pytest.approx(-0.095, rel=1e-12)


def test_nesterov_without_momentum_is_sgd():
    rng = np.random.default_rng(6)
    w, grads = rng.standard_normal(7), [rng.standard_normal(7) for _ in range(6)]
    a, b, ca, cb = (
        w.copy(),
        w.copy(),
        {"learning_rate": 0.1},
        {"learning_rate": 0.1, "momentum": 0.0},
    )
    for g in grads:
        a, ca = optim.sgd(a, g, ca)
        b, cb = optim.sgd_nesterov(b, g, cb)
    np.testing.assert_allclose(b, a, rtol=1e-12)


@pytest.mark.parametrize("rule", sorted(optim.RULES))
def test_whole_vector_update_equals_per_parameter_updates(rule):
    # The parameter server applies one rule to the flat vector (or a slice of it).
    rng = np.random.default_rng(3)
    parts = [rng.standard_normal(s) for s in ((3, 4), (4,), (4, 2))]
    grads = [[rng.standard_normal(p.shape) for p in parts] for _ in range(3)]
    flat, flat_config = np.concatenate([p.ravel() for p in parts]), {"learning_rate": 0.05}
    configs = [{"learning_rate": 0.05} for _ in parts]
    for step in grads:
        flat, flat_config = optim.RULES[rule](
            flat, np.concatenate([g.ravel() for g in step]), flat_config
        )
        for i, g in enumerate(step):
            parts[i], configs[i] = optim.RULES[rule](parts[i], g, configs[i])
    assert np.allclose(flat, np.concatenate([p.ravel() for p in parts]), rtol=1e-14, atol=0)


def test_rules_update_in_place_but_never_touch_dw_or_read_only_weights():
    w, dw = np.ones(3), np.full(3, 2.0)
    next_w, _ = optim.sgd(w, dw, {"learning_rate": 0.5})
    assert next_w is w and np.all(w == 0) and np.all(dw == 2)  # documented: in place
    frozen = np.ones(3)
    frozen.flags.writeable = False
    next_w, _ = optim.adam(frozen, dw)
    assert next_w is not frozen and np.all(frozen == 1) and np.all(next_w < 1)


@pytest.mark.parametrize("rule", sorted(optim.RULES))
def test_float32_in_place_and_read_only(rule):
    w = np.linspace(-1, 1, 5, dtype=np.float32)
    dw = np.full(5, 0.25, dtype=np.float32)
    expected, _ = optim.RULES[rule](w.astype(np.float64), dw.astype(np.float64), {})
    next_w, _ = optim.RULES[rule](w, dw, {})
    assert next_w is w and w.dtype == np.float32  # updated in place
    np.testing.assert_allclose(w, expected, rtol=1e-6)

    frozen = np.linspace(-1, 1, 5, dtype=np.float32)
    frozen.setflags(write=False)
    next_w, _ = optim.RULES[rule](frozen, dw, {})
    assert next_w is not frozen
    np.testing.assert_array_equal(frozen, np.linspace(-1, 1, 5, dtype=np.float32))
    np.testing.assert_allclose(next_w, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "rule, config, message",
    [
        ("sgd", {"learning_rate": -1e-3}, "learning_rate must be non-negative"),
        ("adam", {"learning_rate": float("nan")}, "learning_rate"),
        ("sgd_momentum", {"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ("adam", {"beta2": -0.1}, "beta2"),
        ("rmsprop", {"learning_rate": "fast"}, "must be a number"),
        ("sgd", {"momentum": 0.9}, "unknown sgd setting"),
        ("adam", {"learnig_rate": 1e-3}, "learnig_rate"),
        ("rmsprop", {"epsilon": 0.0}, "rmsprop epsilon must be > 0"),
        ("adamw", {"weight_decay": -1e-3}, "adamw weight_decay must be non-negative"),
        ("adamw", {"weight_decay": float("nan")}, "adamw weight_decay must be non-negative"),
        ("adamw", {"momentum": 0.9}, "unknown adamw setting"),
        ("sgd_nesterov", {"momentum": 1.0}, r"sgd_nesterov momentum must be in \[0, 1\)"),
        ("sgd_nesterov", {"weight_decay": 0.1}, "unknown sgd_nesterov setting"),
    ],
)
def test_bad_settings_are_rejected(rule, config, message):
    with pytest.raises(ValueError, match=message):
        optim.RULES[rule](np.zeros(2), np.zeros(2), config)


def test_validate_config_and_defaults_are_public():
    assert optim.DEFAULTS == EXPECTED_DEFAULTS
    optim.validate_config("adam", {"learning_rate": 1e-3, "m": None, "t": 3})
    with pytest.raises(ValueError, match="unknown update rule 'adagrad'"):
        optim.validate_config("adagrad", {})
    with pytest.raises(ValueError, match=r"^optim\.beta2 must be in \[0, 1\), got 1\.0$"):
        optim.validate_config("adam", {"beta2": 1.0}, prefix="optim.")


@pytest.mark.parametrize("rule", sorted(optim.RULES))
def test_long_and_strided_arrays(rule):
    # Long vectors are updated block by block; strided views in one pass, still in place.
    rng = np.random.default_rng(4)
    hp = {**EXPECTED_DEFAULTS[rule], "learning_rate": 0.05}
    for w0 in (rng.standard_normal(2 * optim.BLOCK + 17), rng.standard_normal((6, 8))[:, ::2]):
        grads = [rng.standard_normal(w0.shape) for _ in range(2)]
        expected = reference_trajectory(rule, w0, grads, hp)
        w, config = w0.copy() if w0.flags.c_contiguous else w0, {"learning_rate": 0.05}
        for g in grads:
            next_w, config = optim.RULES[rule](w, g, config)
            assert next_w is w
        assert np.allclose(w, expected[-1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rule", sorted(optim.RULES))
def test_threads_split_blocks_without_changing_a_bit(rule):
    rng = np.random.default_rng(5)
    w0 = rng.standard_normal(3 * optim.MIN_BLOCKS_PER_THREAD * optim.BLOCK + 5).astype(np.float32)
    grads = [rng.standard_normal(w0.shape).astype(np.float32) for _ in range(2)]
    results = []
    try:
        for threads in (1, 2, 3):
            optim.set_num_threads(threads)
            w, config = w0.copy(), {"learning_rate": 0.05}
            for g in grads:
                w, config = optim.RULES[rule](w, g, config)
            results.append(w)
    finally:
        optim.set_num_threads(1)
    assert all(np.array_equal(results[0], r) for r in results[1:])
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        optim.set_num_threads(0)


def whole_mean(vectors, weights):
    """The weighted mean as whole-array passes (what the parameter server did before
    optim.Mean): the reference a block-by-block mean must equal bit for bit."""
    total = float(sum(weights))
    out = np.multiply(vectors[0], weights[0] / total)
    for vector, weight in zip(vectors[1:], weights[1:], strict=True):
        out += np.multiply(vector, weight / total)
    return out


@pytest.mark.parametrize("rule", sorted(optim.RULES))
def test_a_mean_of_gradients_as_dw_is_bitwise_the_whole_mean(rule):
    # optim.Mean, made block by block inside the rule, with 1 and 2 threads, on a vector of
    # many blocks and on a strided one (made whole): the update of its whole-array mean,
    # to the bit, and its squared norm that of the mean.
    rng = np.random.default_rng(6)
    weights = [3, 5, 2]
    size = 2 * optim.MIN_BLOCKS_PER_THREAD * optim.BLOCK + 11
    try:
        for threads in (1, 2):
            optim.set_num_threads(threads)
            for w0 in (
                rng.standard_normal(size).astype(np.float32),
                rng.standard_normal((6, 8))[:, ::2],
            ):
                grads = [rng.standard_normal(w0.shape).astype(w0.dtype) for _ in weights]
                want, _ = optim.RULES[rule](w0.copy(), whole_mean(grads, weights), {})
                mean = optim.Mean(grads, weights)
                got, _ = optim.RULES[rule](w0.copy(), mean, {})
                assert np.array_equal(got, want)
                avg = whole_mean(grads, weights).astype(np.float64)
                assert mean.sq_norm == pytest.approx(float(np.sum(avg * avg)), rel=1e-5)
    finally:
        optim.set_num_threads(1)


def test_a_mean_needs_a_weight_per_gradient():
    with pytest.raises(ValueError, match="2 gradients for 1 weights"):
        optim.Mean([np.ones(3), np.ones(3)], [1])
