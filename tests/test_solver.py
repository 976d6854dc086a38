"""Solver: overfitting, histories, best parameters, lr decay, checkpoints, errors."""

import platform
import subprocess
import sys

import numpy as np
import pytest

from distnet import optim
from distnet.models import FullyConnectedNet, TwoLayerNet
from distnet.solver import Solver, TrainingDiverged

X86_GLIBC = platform.machine().lower() in ("x86_64", "amd64") and platform.libc_ver()[0] == "glibc"


def small_data(n_train=50, n_val=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_train + n_val, 3, 4, 4)).astype(np.float32)
    y = rng.integers(10, size=n_train + n_val)
    return {
        "X_train": X[:n_train],
        "y_train": y[:n_train],
        "X_val": X[n_train:],
        "y_val": y[n_train:],
    }


def net(**kwargs):
    return FullyConnectedNet([40, 40], input_dim=48, weight_scale=0.1, init_seed=0, **kwargs)


def test_small_net_overfits_50_samples():
    data = small_data()
    solver = Solver(
        net(),
        data,
        update_rule="adam",
        optim_config={"learning_rate": 1e-2},
        num_epochs=20,
        batch_size=25,
        verbose=False,
        seed=0,
    )
    solver.train()
    assert solver.train_acc_history[-1] == 1.0
    assert solver.loss_history[-1] < 0.1 * solver.loss_history[0]


def test_histories_have_the_assignment_lengths():
    data = small_data(n_train=50)
    solver = Solver(net(), data, num_epochs=3, batch_size=20, verbose=False, seed=0)
    solver.train()
    iterations_per_epoch = 50 // 20
    assert len(solver.loss_history) == 3 * iterations_per_epoch
    # Accuracy after the first iteration and at the end of each epoch.
    assert len(solver.train_acc_history) == len(solver.val_acc_history) == 3 + 1
    assert solver.epoch == 3


def test_best_parameters_are_restored_at_the_end():
    data = small_data()
    model = net()
    solver = Solver(
        model,
        data,
        update_rule="sgd_momentum",
        optim_config={"learning_rate": 5e-2},
        num_epochs=8,
        batch_size=10,
        num_val_samples=None,
        verbose=False,
        seed=1,
    )
    solver.train()
    assert solver.best_val_acc == max(solver.val_acc_history)
    assert np.array_equal(model.params.vector, solver.best_params.vector)
    assert solver.check_accuracy(data["X_val"], data["y_val"]) == solver.best_val_acc


def test_training_prints_progress(capsys):
    Solver(net(), small_data(), num_epochs=1, batch_size=25, print_every=1, seed=0).train()
    out = capsys.readouterr().out
    assert "(Iteration 1 / 2) loss:" in out and "(Iteration 2 / 2) loss:" in out
    assert "(Epoch 1 / 1) train acc:" in out


def test_lr_decay_and_custom_update_rule():
    calls = []

    def halving_sgd(w, dw, config=None):
        calls.append(config["learning_rate"])
        return optim.sgd(w, dw, config)

    solver = Solver(
        net(),
        small_data(),
        update_rule=halving_sgd,
        optim_config={"learning_rate": 0.1},
        lr_decay=0.5,
        num_epochs=3,
        batch_size=25,
        verbose=False,
        seed=0,
    )
    solver.train()
    per_step = calls[:: len(solver.optim_configs)]  # one call per parameter per step
    assert per_step == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert all(c["learning_rate"] == pytest.approx(0.0125) for c in solver.optim_configs.values())


def test_seed_makes_training_reproducible():
    runs = []
    for _ in range(2):
        model = net(dropout=0.2, seed=3)
        solver = Solver(model, small_data(), num_epochs=2, batch_size=10, verbose=False, seed=7)
        solver.train()
        runs.append((solver.loss_history, model.params.vector.copy()))
    assert runs[0][0] == runs[1][0] and np.array_equal(runs[0][1], runs[1][1])


def test_steps_equal_model_loss_plus_update_rule_bitwise():
    # The Solver reuses one gradient buffer across steps; the arithmetic must be exactly
    # that of fresh model.loss gradients fed to the rule, step after step.
    data = small_data()
    model, reference = net(use_batchnorm=True), net(use_batchnorm=True)
    solver = Solver(model, data, update_rule="adam", batch_size=10, verbose=False, seed=5)
    sampler, configs = np.random.default_rng(5), {p: {} for p in reference.params}
    for iteration in range(1, 6):
        solver._step(iteration)
        batch = sampler.integers(len(data["X_train"]), size=10)
        loss, grads = reference.loss(data["X_train"][batch], data["y_train"][batch])
        for p in reference.params:
            optim.adam(reference.params[p], grads[p], configs[p])
        assert solver.loss_history[-1] == loss
        assert np.array_equal(model.params.vector, reference.params.vector)
        assert np.array_equal(model.get_bn_state(), reference.get_bn_state())


@pytest.mark.parametrize("flush, expected", [({}, "True"), ({"flush_denormals": False}, "False")])
def test_solver_flushes_denormals_in_its_thread_unless_told_not_to(flush, expected):
    # In a child process: the setting would outlive the test in this one.
    code = f"""
import numpy as np
from distnet.fpenv import denormals_flushed
from distnet.models import TwoLayerNet
from distnet.solver import Solver
X = np.zeros((4, 6), np.float32); y = np.zeros(4, np.int64)
data = {{"X_train": X, "y_train": y, "X_val": X, "y_val": y}}
Solver(TwoLayerNet(input_dim=6, hidden_dim=3), data, verbose=False, **{flush!r})
print(denormals_flushed())
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert out == (expected if X86_GLIBC else "False")


def test_nan_loss_stops_training_naming_the_iteration():
    model = TwoLayerNet(input_dim=48, hidden_dim=20, weight_scale=1.0, init_seed=0)
    solver = Solver(
        model,
        small_data(),
        optim_config={"learning_rate": 1e30},
        num_epochs=5,
        batch_size=10,
        verbose=False,
        seed=0,
    )
    with pytest.raises(TrainingDiverged) as info, np.errstate(over="ignore", invalid="ignore"):
        solver.train()
    step = len(solver.loss_history) + 1  # the first step whose loss was not finite
    assert f"at iteration {step} " in str(info.value)
    assert isinstance(info.value, FloatingPointError)
    assert all(np.isfinite(solver.loss_history))


def test_checkpoints_are_npz_without_pickle(tmp_path):
    data = small_data()
    model = net()
    solver = Solver(
        model,
        data,
        num_epochs=2,
        batch_size=25,
        verbose=False,
        seed=0,
        checkpoint_name=str(tmp_path / "run"),
    )
    solver.train()
    # Saved after the first iteration (epoch 0) and at the end of each epoch.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "run_epoch_0.npz",
        "run_epoch_1.npz",
        "run_epoch_2.npz",
    ]
    with np.load(tmp_path / "run_epoch_2.npz", allow_pickle=False) as saved:
        assert str(saved["update_rule"]) == "sgd" and int(saved["epoch"]) == 2
        assert np.array_equal(saved["loss_history"], solver.loss_history)
        assert np.array_equal(saved["val_acc_history"], solver.val_acc_history)
        assert set(saved.files) >= {f"params/{name}" for name in model.params}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"learning_rat": 1e-3}, "Unrecognized arguments learning_rat"),
        ({"update_rule": "adagrad"}, 'Invalid update_rule "adagrad"'),
        ({"optim_config": {"learning_rate": -1.0}}, "learning_rate must be non-negative"),
        ({"optim_config": {"momentum": 0.9}}, "unknown sgd setting"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_epochs": 2.5}, "num_epochs"),
        ({"lr_decay": 0}, "lr_decay"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Solver(net(), small_data(), **kwargs)


def test_missing_data_is_named():
    data = small_data()
    del data["y_val"]
    with pytest.raises(ValueError, match="y_val"):
        Solver(net(), data)


def test_check_accuracy_in_batches_and_subsamples():
    data = small_data(n_train=250)
    model = net()
    solver = Solver(model, data, verbose=False, seed=0)
    X, y = data["X_train"], data["y_train"]
    expected = np.mean(np.argmax(model.loss(X), axis=1) == y)
    assert solver.check_accuracy(X, y, batch_size=7) == pytest.approx(expected)
    assert 0 <= solver.check_accuracy(X, y, num_samples=30) <= 1
