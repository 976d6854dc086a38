"""First-order update rules (the CS231n assignment-2 protocol).

Every rule has the signature

    next_w, config = rule(w, dw, config=None)

w: the current weights, any shape (one parameter, or a whole flat parameter vector or a
contiguous slice of it: every rule is elementwise); dw: the gradient, same shape, or a
`Mean` of several (the parameter server's workers' gradients, averaged block by block);
config: a dict of hyperparameters (learning_rate, ...) and of the rule's state (velocity,
cache, m, v, t). Missing hyperparameters are filled in with `config.setdefault` from
DEFAULTS, the state is created on the first call and kept in config, and the rule returns
config so the caller keeps passing it back. A rule is registered, with its defaults and
its state, by the `@_rule` line above it; job files (distnet.config) take the rule names,
their settings and the settings' ranges from here.

To stay fast on large vectors the rules update w (and their state) in place and return w
itself as next_w, as the assignment's sgd does; pass a copy to keep the old weights. A
read-only w (e.g. an array read zero-copy from Ray's object store) is copied first.
Scalars are used as Python floats, so float32 weights stay float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from distnet.errors import InvalidInput

UpdateRule = Callable[[np.ndarray, np.ndarray, "dict | None"], "tuple[np.ndarray, dict]"]

# Each rule's hyperparameters with the assignment's defaults, and the state it keeps in
# config: together all that a config may hold. Filled by @_rule beside each rule below.
RULES: dict[str, UpdateRule] = {}
DEFAULTS: dict[str, dict[str, float]] = {}
STATE: dict[str, tuple[str, ...]] = {}

# Where each hyperparameter may lie: decay factors in [0, 1), epsilon (it keeps a divisor
# off zero) above 0, the others (learning_rate, weight_decay) at 0 or above.
_FACTOR = ("in [0, 1)", lambda v: 0 <= v < 1)
_NON_NEGATIVE = ("non-negative", lambda v: v >= 0)
_RANGES = {
    "momentum": _FACTOR,
    "decay_rate": _FACTOR,
    "beta1": _FACTOR,
    "beta2": _FACTOR,
    "epsilon": ("> 0", lambda v: v > 0),
}


def _rule(state: tuple[str, ...] = (), **defaults: float):
    """Register the decorated function as the update rule of its name, with the defaults
    of its hyperparameters and the names of the state it keeps in config."""

    def register(rule: UpdateRule) -> UpdateRule:
        name = rule.__name__
        RULES[name], DEFAULTS[name], STATE[name] = rule, defaults, state
        return rule

    return register


def validate_config(rule: str, config: Mapping, prefix: str | None = None) -> None:
    """Raise InvalidInput (a ValueError) naming any unknown key or out-of-range value.
    Each key is named as `prefix` + key (by default "<rule> <key>")."""
    if rule not in DEFAULTS:
        raise InvalidInput(f"unknown update rule {rule!r} (known: {', '.join(DEFAULTS)})")
    prefix = f"{rule} " if prefix is None else prefix
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
            raise InvalidInput(f"{prefix}{key} must be a number, got {value!r}")
        allowed, ok = _RANGES.get(key, _NON_NEGATIVE)
        if not (math.isfinite(value) and ok(value)):
            raise InvalidInput(f"{prefix}{key} must be {allowed}, got {value!r}")


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
BLOCK = 65536
MIN_BLOCKS_PER_THREAD = 4
_threads = 1
_pool: ThreadPoolExecutor | None = None


def set_num_threads(threads: int) -> None:
    """Threads that update the blocks of one large array (default 1, no threads started).

    numpy releases the GIL inside each pass over a block, so with 2 free cores Adam on the
    3.8M floats of the large benchmark net takes ~7 ms instead of ~10. Results are bitwise
    the same for any count (every operation is elementwise). Set it to the CPUs the process
    may use; it applies to every rule in the process. The threads start on first use and
    inherit that thread's floating-point settings (distnet.fpenv).
    """
    global _threads, _pool
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidInput(f"threads must be a positive integer, got {threads!r}")
    if _pool is not None and threads != _threads:
        _pool.shutdown()
        _pool = None
    _threads = threads


class Mean:
    """The weighted mean of equal-shaped gradients, sum_i weights[i] * vectors[i] /
    sum(weights), given to a rule as its dw: the rule makes it block by block, each block
    while it is in the cache, instead of whole passes over memory before the update (the
    synchronous parameter server: 3 ms of a 10 ms Adam step on 4.1 M floats). Each
    element gets the operations of a whole-array mean, so the result is bitwise the same.
    After the rule, `sq_norm` is the mean's squared L2 norm (a float, summed by block in
    block order: the same for any thread count)."""

    def __init__(self, vectors, weights):
        if len(vectors) != len(weights) or not vectors:
            raise InvalidInput(f"{len(vectors)} gradients for {len(weights)} weights")
        total = float(sum(weights))
        self.vectors = [np.asarray(v) for v in vectors]
        self.scales = [w / total for w in weights]
        self.shape = self.vectors[0].shape
        self._norms: dict[int, float] = {}

    @property
    def sq_norm(self) -> float:
        return sum(self._norms[k] for k in sorted(self._norms))

    def block(self, lo: int, hi: int, out: np.ndarray, spare: np.ndarray) -> np.ndarray:
        """Elements [lo, hi) of the flattened mean, into `out` (`spare`: scratch)."""
        np.multiply(self.vectors[0].reshape(-1)[lo:hi], self.scales[0], out=out)
        for vector, scale in zip(self.vectors[1:], self.scales[1:], strict=True):
            out += np.multiply(vector.reshape(-1)[lo:hi], scale, out=spare)
        self._norms[lo] = float(np.dot(out, out))
        return out

    def whole(self, dtype) -> np.ndarray:
        """The whole mean as one array of `dtype`, the shape of the gradients."""
        size = math.prod(self.shape)
        out = self.block(0, size, np.empty(size, dtype), np.empty(size, dtype))
        return out.reshape(self.shape)


def _apply(kernel, w, dw, *state) -> None:
    """Run kernel(w, dw, *state, scratch) over matching 1-D blocks (views) of the arrays;
    dw may be a Mean, made block by block into a per-thread buffer.

    Blocks are split into one contiguous run per thread, each thread with its own scratch.
    A strided (non-contiguous) operand makes it one pass over the whole arrays.
    """
    global _pool
    mean = dw if isinstance(dw, Mean) else None
    operands = (w, *state, *(mean.vectors if mean else (dw,)))
    if not all(a.flags.c_contiguous and a.shape == w.shape for a in operands):
        grad = mean.whole(w.dtype) if mean else dw
        kernel(w, grad, *state, np.empty(w.shape, dtype=w.dtype))
        return
    flat = [a.reshape(-1) for a in (w, *state)]  # views, since all are contiguous
    flat_dw = None if mean else dw.reshape(-1)
    # Handing work to a thread costs ~0.1 ms: only worth it for a few blocks per thread.
    threads = max(1, min(_threads, w.size // (MIN_BLOCKS_PER_THREAD * BLOCK)))
    bounds = [w.size * i // threads // BLOCK * BLOCK for i in range(threads)] + [w.size]

    def run(lo: int, hi: int) -> None:
        scratch, grad, spare = np.empty((3, min(BLOCK, hi - lo)), dtype=w.dtype)
        for start in range(lo, hi, BLOCK):
            stop = min(start + BLOCK, hi)
            n = stop - start
            block_dw = mean.block(start, stop, grad[:n], spare[:n]) if mean else flat_dw[start:stop]
            w_, *state_ = (a[start:stop] for a in flat)
            kernel(w_, block_dw, *state_, scratch[:n])

    if threads == 1:
        run(0, w.size)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(_threads, thread_name_prefix="distnet-optim")
    # list() re-raises a worker's exception here.
    list(_pool.map(run, bounds[:-1], bounds[1:]))


@_rule(learning_rate=1e-2)
def sgd(w, dw, config=None):
    """Vanilla stochastic gradient descent: w -= learning_rate * dw."""
    w, config, hp = _setup("sgd", w, config)
    lr = hp["learning_rate"]

    def kernel(w_, dw_, step):
        np.multiply(dw_, lr, out=step)
        w_ -= step

    _apply(kernel, w, dw)
    return w, config


@_rule(("velocity",), learning_rate=1e-2, momentum=0.9)
def sgd_momentum(w, dw, config=None):
    """SGD with momentum: v = momentum * v - learning_rate * dw; w += v."""
    return _momentum("sgd_momentum", w, dw, config)


@_rule(("velocity",), learning_rate=1e-2, momentum=0.9)
def sgd_nesterov(w, dw, config=None):
    """Nesterov momentum: v = momentum * v - learning_rate * dw;
    w += momentum * v - learning_rate * dw (the look-ahead form of
    w += -momentum * v_prev + (1 + momentum) * v; PyTorch's nesterov=True)."""
    return _momentum("sgd_nesterov", w, dw, config)


def _momentum(rule: str, w, dw, config):
    w, config, hp = _setup(rule, w, config)
    lr, mu, nesterov = hp["learning_rate"], hp["momentum"], rule == "sgd_nesterov"

    def kernel(w_, dw_, v, step):
        np.multiply(dw_, lr, out=step)
        v *= mu
        v -= step
        if nesterov:
            w_ -= step
            np.multiply(v, mu, out=step)
            w_ += step
        else:
            w_ += v

    _apply(kernel, w, dw, _state(config, "velocity", w))
    return w, config


@_rule(("cache",), learning_rate=1e-2, decay_rate=0.99, epsilon=1e-8)
def rmsprop(w, dw, config=None):
    """RMSProp: cache = decay * cache + (1 - decay) * dw**2;
    w -= learning_rate * dw / (sqrt(cache) + epsilon)."""
    w, config, hp = _setup("rmsprop", w, config)
    decay, lr, eps = hp["decay_rate"], hp["learning_rate"], hp["epsilon"]

    def kernel(w_, dw_, cache, step):
        np.square(dw_, out=step)  # 2x faster than multiply(dw_, dw_)
        step *= 1 - decay
        cache *= decay
        cache += step
        np.sqrt(cache, out=step)
        step += eps
        np.divide(dw_, step, out=step)
        step *= lr
        w_ -= step

    _apply(kernel, w, dw, _state(config, "cache", w))
    return w, config


@_rule(("m", "v", "t"), learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8)
def adam(w, dw, config=None):
    """Adam with bias correction; t counts the updates made so far.

    t += 1; m = beta1 * m + (1 - beta1) * dw; v = beta2 * v + (1 - beta2) * dw**2;
    w -= learning_rate * m_hat / (sqrt(v_hat) + epsilon), where m_hat = m / (1 - beta1**t)
    and v_hat = v / (1 - beta2**t).
    """
    return _adam("adam", w, dw, config)


# PyTorch's AdamW defaults.
@_rule(("m", "v", "t"), learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8, weight_decay=1e-2)
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
    # lr * m_hat / (sqrt(v_hat) + eps) = step_size * m / (sqrt(v) + eps * root2), with
    # root2 = sqrt(1 - beta2**t): one pass fewer than correcting v first (PyTorch's form).
    root2 = math.sqrt(1 - beta2**t)
    step_size, eps = lr * root2 / (1 - beta1**t), hp["epsilon"] * root2

    def kernel(w_, dw_, m_, v_, step):
        m_ *= beta1
        np.multiply(dw_, 1 - beta1, out=step)
        m_ += step
        v_ *= beta2
        np.square(dw_, out=step)  # 2x faster than multiply(dw_, dw_)
        step *= 1 - beta2
        v_ += step
        if decay != 1:
            w_ *= decay
        np.sqrt(v_, out=step)
        step += eps
        np.divide(m_, step, out=step)
        step *= step_size
        w_ -= step

    _apply(kernel, w, dw, m, v)
    return w, config
