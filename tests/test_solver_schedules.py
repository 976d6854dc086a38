"""Solver with a learning-rate schedule (a pure function of the iteration) and early stopping."""

import math

import numpy as np
import pytest
from test_solver import net, small_data

from distnet import optim
from distnet.schedules import Schedule
from distnet.solver import Solver


def recording_sgd(calls):
    def rule(w, dw, config=None):
        calls.append(config["learning_rate"])
        return optim.sgd(w, dw, config)

    return rule


def test_cosine_schedule_sets_the_rate_of_every_iteration():
    calls = []
    schedule = Schedule(
        kind="cosine", base_lr=0.1, steps_per_epoch=2, total_steps=6, warmup_steps=1
    )
    solver = Solver(
        net(),
        small_data(),
        update_rule=recording_sgd(calls),
        optim_config={"learning_rate": 123.0},
        lr_schedule=schedule,
        num_epochs=3,
        batch_size=25,
        verbose=False,
        seed=0,
    )
    solver.train()
    per_step = calls[:: len(solver.optim_configs)]
    # warm-up to 0.1 at step 1 (0.1 * 1/2 at step 0), then cosine down to 0 at step 6
    expected = [0.05, 0.1] + [0.05 * (1 + math.cos(math.pi * k / 5)) for k in range(1, 5)]
    assert per_step == pytest.approx(expected)


def test_schedule_and_lr_decay_exclude_each_other():
    with pytest.raises(ValueError, match="lr_schedule"):
        Solver(net(), small_data(), lr_schedule=lambda t: 0.1, lr_decay=0.9)
    with pytest.raises(ValueError, match="patience"):
        Solver(net(), small_data(), patience=0)


def test_patience_stops_when_validation_accuracy_stalls():
    # a rate so small that the validation accuracy never moves after the first epoch
    solver = Solver(
        net(),
        small_data(),
        optim_config={"learning_rate": 1e-12},
        patience=2,
        num_epochs=10,
        batch_size=25,
        verbose=False,
        seed=0,
    )
    solver.train()
    # one record before the first step, then one per epoch: the first two epochs bring
    # nothing better than the start, so it stops after epoch 2 of 10
    assert len(solver.val_acc_history) == 3
    assert solver.epoch == 2
    assert len(set(np.round(solver.val_acc_history, 6))) == 1
