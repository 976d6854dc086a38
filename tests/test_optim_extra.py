"""AdamW and Nesterov momentum against hand-computed values and plain-Python reference loops."""

import math

import numpy as np
import pytest

from distnet import optim


def _adamw_reference(w, grads, lr, beta1, beta2, eps, weight_decay):
    """Loshchilov & Hutter's AdamW (decay scaled by lr, as PyTorch), one scalar at a time."""
    w = [float(x) for x in w]
    m = [0.0] * len(w)
    v = [0.0] * len(w)
    for t, dw in enumerate(grads, start=1):
        for i, g in enumerate(dw):
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat = m[i] / (1 - beta1**t)
            v_hat = v[i] / (1 - beta2**t)
            w[i] -= lr * (m_hat / (math.sqrt(v_hat) + eps) + weight_decay * w[i])
    return w


def _nesterov_reference(w, grads, lr, mu):
    """CS231n's Nesterov momentum, one scalar at a time."""
    w = [float(x) for x in w]
    v = [0.0] * len(w)
    for dw in grads:
        for i, g in enumerate(dw):
            v_prev = v[i]
            v[i] = mu * v[i] - lr * g
            w[i] += -mu * v_prev + (1 + mu) * v[i]
    return w


def _run(rule, w, grads, config):
    w = w.copy()  # the rules update w in place
    for dw in grads:
        w, config = rule(w, dw, config)
    return w, config


def _trajectory(seed, steps=6, size=7):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(size), [rng.standard_normal(size) for _ in range(steps)]


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


@pytest.mark.parametrize("lr, beta1, beta2, eps, weight_decay", [
    (1e-3, 0.9, 0.999, 1e-8, 1e-2),
    (5e-2, 0.8, 0.99, 1e-6, 5e-2),
    (1e-2, 0.0, 0.5, 1e-8, 0.0),
])
def test_adamw_matches_reference(lr, beta1, beta2, eps, weight_decay):
    w, grads = _trajectory(1)
    config = {"learning_rate": lr, "beta1": beta1, "beta2": beta2, "epsilon": eps,
              "weight_decay": weight_decay}
    got, config = _run(optim.adamw, w, grads, config)
    expected = _adamw_reference(w, grads, lr, beta1, beta2, eps, weight_decay)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    assert config["t"] == len(grads)


def test_adamw_defaults():
    w, grads = _trajectory(2)
    got, config = _run(optim.adamw, w, grads, {})
    expected = _adamw_reference(w, grads, 1e-3, 0.9, 0.999, 1e-8, 1e-2)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    assert config["weight_decay"] == 1e-2


def test_adamw_without_weight_decay_is_adam():
    w, grads = _trajectory(3)
    got, _ = _run(optim.adamw, w, grads, {"learning_rate": 1e-2, "weight_decay": 0.0})
    adam, _ = _run(optim.adam, w, grads, {"learning_rate": 1e-2})
    np.testing.assert_allclose(got, adam, rtol=1e-12)


def test_nesterov_two_steps_by_hand():
    # v = -0.05, w = 1 - 1.9 * 0.05 = 0.905; then v = -0.095, w = 0.905 + 0.045 - 1.9 * 0.095
    w, config = optim.sgd_nesterov(np.array([1.0]), np.array([0.5]), {"learning_rate": 0.1})
    assert w[0] == pytest.approx(0.905, rel=1e-12)
    w, config = optim.sgd_nesterov(w, np.array([0.5]), config)
    assert w[0] == pytest.approx(0.7695, rel=1e-12)
    assert config["velocity"][0] == pytest.approx(-0.095, rel=1e-12)


@pytest.mark.parametrize("lr, mu", [(1e-2, 0.9), (0.3, 0.5), (1e-3, 0.99)])
def test_nesterov_matches_reference(lr, mu):
    w, grads = _trajectory(4)
    got, _ = _run(optim.sgd_nesterov, w, grads, {"learning_rate": lr, "momentum": mu})
    np.testing.assert_allclose(got, _nesterov_reference(w, grads, lr, mu), rtol=1e-12, atol=1e-15)


def test_nesterov_defaults():
    w, grads = _trajectory(5)
    got, config = _run(optim.sgd_nesterov, w, grads, {})
    np.testing.assert_allclose(got, _nesterov_reference(w, grads, 1e-2, 0.9), rtol=1e-12)
    assert config["momentum"] == 0.9


def test_nesterov_without_momentum_is_sgd():
    w, grads = _trajectory(6)
    got, _ = _run(optim.sgd_nesterov, w, grads, {"learning_rate": 0.1, "momentum": 0.0})
    sgd, _ = _run(optim.sgd, w, grads, {"learning_rate": 0.1})
    np.testing.assert_allclose(got, sgd, rtol=1e-12)


@pytest.mark.parametrize("rule", [optim.adamw, optim.sgd_nesterov])
def test_float32_in_place_and_read_only(rule):
    w = np.linspace(-1, 1, 5, dtype=np.float32)
    dw = np.full(5, 0.25, dtype=np.float32)
    expected, _ = rule(w.astype(np.float64), dw.astype(np.float64), {})
    next_w, config = rule(w, dw, {})
    assert next_w is w and w.dtype == np.float32  # updated in place, as the other rules
    np.testing.assert_allclose(w, expected, rtol=1e-6)

    frozen = np.linspace(-1, 1, 5, dtype=np.float32)
    frozen.setflags(write=False)
    next_w, _ = rule(frozen, dw, {})
    assert next_w is not frozen
    np.testing.assert_array_equal(frozen, np.linspace(-1, 1, 5, dtype=np.float32))
    np.testing.assert_allclose(next_w, expected, rtol=1e-6)


def test_rules_are_registered():
    assert optim.RULES["adamw"] is optim.adamw
    assert optim.RULES["sgd_nesterov"] is optim.sgd_nesterov


@pytest.mark.parametrize("rule, config, message", [
    ("adamw", {"weight_decay": -1e-3}, "adamw weight_decay must be non-negative"),
    ("adamw", {"weight_decay": float("nan")}, "adamw weight_decay must be non-negative"),
    ("adamw", {"momentum": 0.9}, "unknown adamw setting"),
    ("sgd_nesterov", {"momentum": 1.0}, r"sgd_nesterov momentum must be in \[0, 1\)"),
    ("sgd_nesterov", {"weight_decay": 0.1}, "unknown sgd_nesterov setting"),
])
def test_bad_settings_are_named(rule, config, message):
    with pytest.raises(ValueError, match=message):
        optim.RULES[rule](np.zeros(3), np.zeros(3), config)
