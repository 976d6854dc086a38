"""First-order update rules (the CS231n assignment-2 protocol).

Every rule has the signature

    next_w, config = rule(w, dw, config=None)

w: the current weights, any shape (one parameter, or a whole flat parameter vector or a
contiguous slice of it: every rule is elementwise); dw: the gradient, same shape;
config: a dict of hyperparameters (learning_rate, ...) and of the rule's state (velocity,
cache, m, v, t). Missing hyperparameters are filled in with `config.setdefault` from
DEFAULTS, the state is created on the first call and kept in config, and the rule returns
config so the caller keeps passing it back.

To stay fast on large vectors the rules update w (and their state) in place and return w
itself as next_w, as the assignment's sgd does; pass a copy to keep the old weights. A
read-only w (e.g. an array read zero-copy from Ray's object store) is copied first.
Scalars are used as Python floats, so float32 weights stay float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from distnet.layers import InvalidInput

UpdateRule = Callable[[np.ndarray, np.ndarray, "dict | None"], "tuple[np.ndarray, dict]"]

# The assignment's defaults, per rule; together with STATE they are all a config may hold.
DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"learning_rate": 1e-2},
    "sgd_momentum": {"learning_rate": 1e-2, "momentum": 0.9},
    "sgd_nesterov": {"learning_rate": 1e-2, "momentum": 0.9},
    "rmsprop": {"learning_rate": 1e-2, "decay_rate": 0.99, "epsilon": 1e-8},
    "adam": {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8},
    # PyTorch's AdamW defaults.
    "adamw": {
        "learning_rate": 1e-3,
        "beta1": 0.9,
        "beta2": 0.999,
        "epsilon": 1e-8,
        "weight_decay": 1e-2,
    },
}
STATE: dict[str, tuple[str, ...]] = {
    "sgd": (),
    "sgd_momentum": ("velocity",),
    "sgd_nesterov": ("velocity",),
    "rmsprop": ("cache",),
    "adam": ("m", "v", "t"),
    "adamw": ("m", "v", "t"),
}
# Hyperparameters that are decay factors, hence must lie in [0, 1).
_FACTORS = {"momentum", "decay_rate", "beta1", "beta2"}


def validate_config(rule: str, config: Mapping) -> None:
    """Raise InvalidInput (a ValueError) naming any unknown key or out-of-range value."""
    if rule not in DEFAULTS:
        raise InvalidInput(f"unknown update rule {rule!r} (known: {', '.join(DEFAULTS)})")
    unknown = sorted(set(config) - set(DEFAULTS[rule]) - set(STATE[rule]))
    if unknown:
        raise InvalidInput(
            f"unknown {rule} setting(s) {', '.join(unknown)} (known: {', '.join(DEFAULTS[rule])})"
        )
    for key in DEFAULTS[rule]:
        if key not in config:
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InvalidInput(f"{rule} {key} must be a number, got {value!r}")
        if not math.isfinite(value) or value < 0 or (key in _FACTORS and value >= 1):
            allowed = "in [0, 1)" if key in _FACTORS else "non-negative"
            raise InvalidInput(f"{rule} {key} must be {allowed}, got {value!r}")


def _setup(rule: str, w, config: dict | None):
    """Fill in defaults, validate, and return (writable w, config, hyperparameters)."""
    config = {} if config is None else config
    for key, value in DEFAULTS[rule].items():
        config.setdefault(key, value)
    validate_config(rule, config)
    hyper = {key: float(config[key]) for key in DEFAULTS[rule]}
    if not w.flags.writeable:
        w = w.copy()
    return w, config, hyper


def _state(config: dict, key: str, w) -> np.ndarray:
    if config.get(key) is None:
        config[key] = np.zeros_like(w)
    return config[key]


# Elements per block: a block of every operand stays in cache through all the passes of a
# rule, which makes Adam on a multi-million-element vector about 1.7x faster than whole-
# array passes (and the results are bitwise the same: every operation is elementwise).
BLOCK = 32768


def _blocks(w, dw, *state):
    """Yield matching 1-D blocks (views) of w, dw and the state arrays, plus a scratch block."""
    arrays = (w, dw, *state)
    if all(a.flags.c_contiguous and a.shape == w.shape for a in arrays):
        flat = [a.reshape(-1) for a in arrays]  # views, since all are contiguous
        scratch = np.empty(min(BLOCK, w.size), dtype=w.dtype)
        for start in range(0, w.size, BLOCK):
            parts = [a[start : start + BLOCK] for a in flat]
            yield (*parts, scratch[: len(parts[0])])
    else:  # a strided view: one pass over the whole arrays
        yield (*arrays, np.empty(w.shape, dtype=w.dtype))


def sgd(w, dw, config=None):
    """Vanilla stochastic gradient descent: w -= learning_rate * dw."""
    w, config, hp = _setup("sgd", w, config)
    for w_, dw_, step in _blocks(w, dw):
        np.multiply(dw_, hp["learning_rate"], out=step)
        w_ -= step
    return w, config


def sgd_momentum(w, dw, config=None):
    """SGD with momentum: v = momentum * v - learning_rate * dw; w += v."""
    return _momentum("sgd_momentum", w, dw, config)


def sgd_nesterov(w, dw, config=None):
    """Nesterov momentum: v = momentum * v - learning_rate * dw;
    w += momentum * v - learning_rate * dw (the look-ahead form of
    w += -momentum * v_prev + (1 + momentum) * v; PyTorch's nesterov=True)."""
    return _momentum("sgd_nesterov", w, dw, config)


def _momentum(rule: str, w, dw, config):
    w, config, hp = _setup(rule, w, config)
    lr, mu = hp["learning_rate"], hp["momentum"]
    for w_, dw_, v, step in _blocks(w, dw, _state(config, "velocity", w)):
        np.multiply(dw_, lr, out=step)
        v *= mu
        v -= step
        if rule == "sgd_nesterov":
            w_ -= step
            np.multiply(v, mu, out=step)
            w_ += step
        else:
            w_ += v
    return w, config


def rmsprop(w, dw, config=None):
    """RMSProp: cache = decay * cache + (1 - decay) * dw**2;
    w -= learning_rate * dw / (sqrt(cache) + epsilon)."""
    w, config, hp = _setup("rmsprop", w, config)
    decay = hp["decay_rate"]
    for w_, dw_, cache, step in _blocks(w, dw, _state(config, "cache", w)):
        np.multiply(dw_, dw_, out=step)
        step *= 1 - decay
        cache *= decay
        cache += step
        np.sqrt(cache, out=step)
        step += hp["epsilon"]
        np.divide(dw_, step, out=step)
        step *= hp["learning_rate"]
        w_ -= step
    return w, config


def adam(w, dw, config=None):
    """Adam with bias correction; t counts the updates made so far.

    t += 1; m = beta1 * m + (1 - beta1) * dw; v = beta2 * v + (1 - beta2) * dw**2;
    w -= learning_rate * m_hat / (sqrt(v_hat) + epsilon), where m_hat = m / (1 - beta1**t)
    and v_hat = v / (1 - beta2**t).
    """
    return _adam("adam", w, dw, config)


def adamw(w, dw, config=None):
    """Adam with decoupled weight decay (Loshchilov & Hutter; PyTorch's AdamW):
    w *= 1 - learning_rate * weight_decay, then the Adam step. Unlike the L2 penalty
    `reg` of the models, the decay does not pass through m and v.

    Weight decay versus L2 `reg`: `reg` adds 0.5 * reg * sum(W**2) to the loss, so reg * W
    arrives inside dw and Adam divides it by sqrt(v_hat) like the rest of the gradient:
    weights with large or noisy gradients are barely regularized. weight_decay shrinks every
    weight by the same factor each step, whatever its gradient history (with plain SGD the
    two updates coincide for weight_decay = reg). `reg` touches the weight matrices only;
    weight_decay touches every element the rule is given, so biases and batchnorm gamma and
    beta decay too (the Solver and the parameter server pass every parameter through the
    rule). Use one or the other, not both.
    """
    return _adam("adamw", w, dw, config)


def _adam(rule: str, w, dw, config):
    w, config, hp = _setup(rule, w, config)
    m, v = _state(config, "m", w), _state(config, "v", w)
    t = config["t"] = int(config.get("t") or 0) + 1
    beta1, beta2, lr = hp["beta1"], hp["beta2"], hp["learning_rate"]
    decay = 1 - lr * hp.get("weight_decay", 0.0)
    v_correction, step_size = 1 / (1 - beta2**t), lr / (1 - beta1**t)
    for w_, dw_, m_, v_, step in _blocks(w, dw, m, v):
        m_ *= beta1
        np.multiply(dw_, 1 - beta1, out=step)
        m_ += step
        v_ *= beta2
        np.multiply(dw_, dw_, out=step)
        step *= 1 - beta2
        v_ += step
        if decay != 1:
            w_ *= decay
        # learning_rate * m_hat / (sqrt(v_hat) + epsilon)
        np.multiply(v_, v_correction, out=step)
        np.sqrt(step, out=step)
        step += hp["epsilon"]
        np.divide(m_, step, out=step)
        step *= step_size
        w_ -= step
    return w, config


RULES: dict[str, UpdateRule] = {
    "sgd": sgd,
    "sgd_momentum": sgd_momentum,
    "sgd_nesterov": sgd_nesterov,
    "rmsprop": rmsprop,
    "adam": adam,
    "adamw": adamw,
}
