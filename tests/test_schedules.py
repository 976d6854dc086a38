"""Learning-rate schedules: hand-computed values, properties, argument checking."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distnet.errors import DistnetError
from distnet.schedules import Schedule, ScheduleError

# Values below were worked out by hand from the formulas in the issue / module docstring;
# cos(pi/4) = 0.7071067811865476, cos(pi/3) = 0.5.


@pytest.mark.parametrize(
    "step, lr",
    [(0, 0.1), (9, 0.1), (10, 0.05), (25, 0.025), (99, 0.1 / 512)],
)
def test_epoch_decay_multiplies_by_lr_decay_each_epoch(step, lr):
    s = Schedule("epoch_decay", base_lr=0.1, steps_per_epoch=10, total_steps=100, lr_decay=0.5)
    assert s(step) == pytest.approx(lr, rel=1e-12)


def test_epoch_decay_default_is_constant():
    s = Schedule("epoch_decay", base_lr=3e-4, steps_per_epoch=7, total_steps=70)
    assert {s(t) for t in range(200)} == {3e-4}


@pytest.mark.parametrize(
    "step, lr",
    [(0, 1.0), (14, 1.0), (15, 0.1), (29, 0.1), (30, 0.01), (44, 0.01), (45, 0.001)],
)
def test_step_drops_by_gamma_every_step_size_epochs(step, lr):
    s = Schedule(
        "step", base_lr=1.0, steps_per_epoch=5, total_steps=100, step_size_epochs=3, step_gamma=0.1
    )
    assert s(step) == pytest.approx(lr, rel=1e-12)


@pytest.mark.parametrize(
    "step, lr",
    [
        (0, 1 / 11),
        (4, 5 / 11),
        (9, 10 / 11),
        (10, 1.0),
        (35, 0.8535533905932737),  # p = 1/4: (1 + cos(pi/4)) / 2
        (60, 0.5),
        (85, 0.1464466094067262),  # p = 3/4: (1 - cos(pi/4)) / 2
        (110, 0.0),
        (500, 0.0),  # past the end: stays at min_lr
    ],
)
def test_cosine_with_warmup(step, lr):
    s = Schedule("cosine", base_lr=1.0, steps_per_epoch=10, total_steps=110, warmup_steps=10)
    assert s(step) == pytest.approx(lr, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("step, lr", [(0, 1.0), (50, 0.6), (100, 0.2), (150, 0.2)])
def test_cosine_without_warmup_ends_at_min_lr(step, lr):
    s = Schedule("cosine", base_lr=1.0, steps_per_epoch=10, total_steps=100, min_lr=0.2)
    assert s(step) == pytest.approx(lr, rel=1e-12)


@pytest.mark.parametrize(
    "step, lr",
    [
        (0, 0.04),  # base_lr / div_factor
        (10, 0.28),  # f = 1/3: 1 + (0.04 - 1) * (1 + 1/2) / 2
        (15, 0.52),
        (30, 1.0),
        (65, 0.5),
        (100, 0.0),
        (120, 0.0),
    ],
)
def test_onecycle(step, lr):
    s = Schedule("onecycle", base_lr=1.0, steps_per_epoch=10, total_steps=100, warmup_steps=30)
    assert s(step) == pytest.approx(lr, rel=1e-12, abs=1e-15)


def test_onecycle_div_factor_and_min_lr():
    s = Schedule(
        "onecycle",
        base_lr=0.5,
        steps_per_epoch=1,
        total_steps=40,
        warmup_steps=10,
        div_factor=10.0,
        min_lr=0.01,
    )
    assert s(0) == pytest.approx(0.05, rel=1e-12)
    assert s(25) == pytest.approx(0.01 + 0.49 * 0.5, rel=1e-12)
    assert s(40) == pytest.approx(0.01, rel=1e-12)


def test_numpy_integer_steps_and_float_result():
    s = Schedule("cosine", base_lr=1.0, steps_per_epoch=10, total_steps=110, warmup_steps=10)
    lr = s(np.int64(60))
    assert type(lr) is float and lr == pytest.approx(0.5)


@st.composite
def annealing_schedules(draw, kind):
    total = draw(st.integers(2, 1500))
    warmup = draw(st.integers(1 if kind == "onecycle" else 0, total - 1))
    base = draw(st.floats(1e-6, 10.0))
    min_lr = base * draw(st.floats(0.0, 0.999))  # below base_lr, whatever the rounding
    return Schedule(
        kind,
        base_lr=base,
        steps_per_epoch=draw(st.integers(1, 300)),
        total_steps=total,
        warmup_steps=warmup,
        min_lr=min_lr,
    )


def _rates(schedule, extra=5):
    return np.array([schedule(t) for t in range(schedule.total_steps + extra)])


@settings(max_examples=60, deadline=None)
@given(annealing_schedules("cosine"))
def test_cosine_properties(s):
    lr = _rates(s)
    w = s.warmup_steps
    tol = 1e-12 * s.base_lr
    assert np.all(lr > 0) or s.min_lr == 0
    assert np.all(lr <= s.base_lr + tol)
    assert np.all(lr[w:] >= s.min_lr - tol)
    assert np.all(np.diff(lr[: w + 1]) > 0)  # warm-up strictly rises to base_lr at step w
    assert lr[w] == pytest.approx(s.base_lr)
    assert np.all(np.diff(lr[w:]) <= tol)  # then never rises again
    assert lr[s.total_steps] == pytest.approx(s.min_lr, abs=tol)


@settings(max_examples=60, deadline=None)
@given(annealing_schedules("onecycle"))
def test_onecycle_properties(s):
    lr = _rates(s)
    w = s.warmup_steps
    tol = 1e-12 * s.base_lr
    assert lr[0] == pytest.approx(s.base_lr / s.div_factor)
    assert lr[w] == pytest.approx(s.base_lr)
    assert np.all(lr <= s.base_lr + tol)
    assert np.all(lr >= min(s.min_lr, s.base_lr / s.div_factor) - tol)
    assert np.all(np.diff(lr[: w + 1]) >= -tol)
    assert np.all(np.diff(lr[w:]) <= tol)
    assert lr[-1] == pytest.approx(s.min_lr, abs=tol)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 50),
    st.floats(0.1, 1.0),
    st.integers(1, 5),
    st.sampled_from(["epoch_decay", "step"]),
)
def test_epoch_based_kinds_are_constant_within_an_epoch(steps_per_epoch, factor, size, kind):
    extra = (
        {"lr_decay": factor}
        if kind == "epoch_decay"
        else {"step_gamma": factor, "step_size_epochs": size}
    )
    s = Schedule(kind, base_lr=0.3, steps_per_epoch=steps_per_epoch, total_steps=1000, **extra)
    per_epoch = [
        {s(t) for t in range(e * steps_per_epoch, (e + 1) * steps_per_epoch)} for e in range(6)
    ]
    assert all(len(rates) == 1 for rates in per_epoch)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "linear"}, "schedule kind 'linear' is not one of"),
        ({"base_lr": 0.0}, "base_lr must be > 0"),
        ({"base_lr": -1e-3}, "base_lr must be > 0"),
        ({"base_lr": float("nan")}, "base_lr must be finite"),
        ({"base_lr": "0.1"}, "base_lr must be a number"),
        ({"steps_per_epoch": 0}, "steps_per_epoch must be >= 1"),
        ({"total_steps": 2.5}, "total_steps must be an integer"),
        ({"total_steps": True}, "total_steps must be an integer"),
        ({"lr_decay": 0.0}, r"lr_decay must be in \(0, 1\], got 0.0"),
        ({"lr_decay": 1.5}, r"lr_decay must be in \(0, 1\]"),
        (
            {"kind": "cosine", "lr_decay": 0.95},
            'lr_decay = 0.95 has no effect with schedule = "cosine" '
            "\\(it uses min_lr, warmup_steps",
        ),
        ({"warmup_steps": 10}, 'warmup_steps = 10 has no effect with schedule = "epoch_decay"'),
        ({"kind": "step"}, 'step_size_epochs is required with schedule = "step"'),
        ({"kind": "step", "step_size_epochs": 0}, "step_size_epochs must be >= 1"),
        (
            {"kind": "step", "step_size_epochs": 2, "step_gamma": 2.0},
            r"step_gamma must be in \(0, 1\]",
        ),
        ({"kind": "cosine", "min_lr": -1.0}, r"min_lr must be in \[0, base_lr\), got -1.0"),
        ({"kind": "cosine", "min_lr": 0.1}, r"min_lr must be in \[0, base_lr\), got 0.1"),
        ({"kind": "cosine", "warmup_steps": 100}, "warmup_steps=100 leaves no steps"),
        ({"kind": "onecycle"}, 'warmup_steps must be > 0 with schedule = "onecycle"'),
        ({"kind": "onecycle", "warmup_steps": 5, "div_factor": 0.5}, "div_factor must be >= 1"),
        ({"kind": "cosine", "div_factor": 10.0}, "div_factor = 10.0 has no effect"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    args = {"kind": "epoch_decay", "base_lr": 0.1, "steps_per_epoch": 10, "total_steps": 100}
    with pytest.raises(ScheduleError, match=message) as info:
        Schedule(**{**args, **kwargs})
    assert isinstance(info.value, DistnetError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("step", [-1, 1.0, "3"])
def test_bad_steps(step):
    s = Schedule("epoch_decay", base_lr=0.1, steps_per_epoch=10, total_steps=100)
    with pytest.raises((ScheduleError, TypeError)):
        s(step)
