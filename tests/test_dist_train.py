"""Synchronous data-parallel training on a real local Ray: equivalence and determinism."""

import numpy as np
import pytest

from distnet import optim
from distnet.data.reader import assign_rows, open_split
from distnet.distributed import sampling
from distnet.distributed.driver import train
from distnet.models import build_model


def global_batch(job, epoch, step):
    """The rows all workers use at (epoch, step), as global row numbers of the train split."""
    total = open_split(job.data.path, "train").num_rows
    rows = []
    for i, b in enumerate(job.train.worker_batch_sizes()):
        start, stop = assign_rows(total, i, job.train.workers)
        rows.append(start + sampling.batch_indices(job.seed, epoch, step, i, stop - start, b))
    return np.concatenate(rows)


@pytest.mark.parametrize(
    "rule,settings", [("sgd", {}), ("sgd_momentum", {"momentum": 0.5}), ("adam", {"beta1": 0.8})]
)
def test_one_sync_step_equals_single_process_step_on_whole_batch(
    ray_session, tiny_job, rule, settings
):
    job = tiny_job(
        model={"dtype": "float64", "reg": 0.05, "hidden_dims": [12, 8]},
        optim={"update_rule": rule, "learning_rate": 1e-2, **settings},
        train={"workers": 3, "batch_size": 40, "max_steps": 1},
    )
    result = train(job, progress=False, overwrite=True)

    model = build_model(job.model, seed=job.seed)
    X, y = open_split(job.data.path, "train").batch(global_batch(job, 0, 0))
    _, grads = model.loss(X, y)
    config = {"learning_rate": 1e-2, **settings}
    expected, _ = optim.RULES[rule](model.params.vector.copy(), grads.vector, config)
    assert result.steps == 1
    np.testing.assert_allclose(result.final_params, expected, rtol=1e-10, atol=0)
    assert not np.array_equal(expected, model.params.vector)  # the step did change something


def test_sharded_servers_give_the_same_run_as_one_server(ray_session, tiny_job):
    base = {
        "model": {"hidden_dims": [16, 8], "use_batchnorm": True},
        "optim": {"update_rule": "adam", "learning_rate": 1e-3},
    }
    one = train(tiny_job(**base, train={"servers": 1}), progress=False, overwrite=True)
    three = train(tiny_job(**base, train={"servers": 3}), progress=False, overwrite=True)
    assert one.steps == three.steps > 5
    np.testing.assert_array_equal(one.final_params, three.final_params)
    np.testing.assert_array_equal(one.bn_state, three.bn_state)
    assert one.loss_history == three.loss_history


@pytest.mark.parametrize("compression", ["none", "fp16"])
def test_mesh_and_tasks_give_the_same_run(ray_session, tiny_job, compression):
    """The two transports of a synchronous step make the same calls in the same order; the
    mesh's bytes through shared memory (actors on one machine) or by TCP alike."""
    base = {
        "model": {"hidden_dims": [16, 8], "use_batchnorm": True, "dropout": 0.2},
        "optim": {"update_rule": "adam", "learning_rate": 1e-3},
    }
    runs = [
        train(
            tiny_job(**base, train={"servers": 2, "compression": compression, **how}),
            progress=False,
            overwrite=True,
        )
        for how in (
            {"transport": "mesh"},
            {"transport": "tasks"},
            {"transport": "mesh", "shared_memory": False},
        )
    ]
    mesh, tasks, tcp = runs
    assert (mesh.transport, tasks.transport) == ("mesh", "tasks")
    assert mesh.steps == tasks.steps > 5
    np.testing.assert_array_equal(tcp.final_params, mesh.final_params)
    assert tcp.loss_history == mesh.loss_history
    np.testing.assert_array_equal(mesh.final_params, tasks.final_params)
    np.testing.assert_array_equal(mesh.params, tasks.params)  # best-val parameters
    np.testing.assert_array_equal(mesh.bn_state, tasks.bn_state)
    assert mesh.loss_history == tasks.loss_history
    assert mesh.val_acc_history == tasks.val_acc_history
    assert mesh.test_acc == tasks.test_acc


def test_two_runs_of_the_same_job_are_identical(ray_session, tiny_job):
    job = tiny_job(
        model={"hidden_dims": [16, 8], "use_batchnorm": True, "dropout": 0.3},
        data={"augment_flip": True, "augment_crop_padding": 2},
    )
    first = train(job, progress=False, overwrite=True)
    second = train(job, progress=False, overwrite=True)
    np.testing.assert_array_equal(first.final_params, second.final_params)
    np.testing.assert_array_equal(first.params, second.params)
    assert first.loss_history == second.loss_history
    assert first.val_acc_history == second.val_acc_history
    other = train(
        tiny_job(seed=4, model=job.model.__dict__ | {"hidden_dims": [16, 8]}),
        progress=False,
        overwrite=True,
    )
    assert not np.array_equal(first.final_params, other.final_params)


def test_result_has_histories_and_summary(ray_session, tiny_job):
    job = tiny_job(train={"num_epochs": 3})
    result = train(job, progress=False, overwrite=True)
    steps_per_epoch = result.steps // 3
    assert len(result.loss_history) == result.steps == 3 * steps_per_epoch
    assert len(result.train_acc_history) == len(result.val_acc_history) == 3
    assert result.best_val_acc == max(result.val_acc_history)
    summary = result.summary()
    for key in (
        "train_acc",
        "val_acc",
        "test_acc",
        "best_val_acc",
        "final_loss",
        "steps",
        "epochs",
        "samples_per_s",
        "wall_s",
        "logdir",
        "checkpoint",
    ):
        assert key in summary
    assert 0 <= summary["test_acc"] <= 1 and summary["epochs"] == 3


def test_batchnorm_statistics_are_averaged_across_workers(ray_session, tiny_job):
    """Evaluation uses one running mean at the server: the weighted mean of the workers'."""
    job = tiny_job(
        model={"hidden_dims": [8], "use_batchnorm": True},
        train={"workers": 2, "max_steps": 1, "batch_size": 40},
    )
    result = train(job, progress=False, overwrite=True)
    model = build_model(job.model, seed=job.seed)
    reader = open_split(job.data.path, "train")
    rows = global_batch(job, 0, 0)
    states = []
    for part in (rows[:20], rows[20:]):  # each worker's half of the global batch
        replica = build_model(job.model, seed=job.seed)
        replica.loss(*reader.batch(part))
        states.append(replica.get_bn_state())
    expected = (states[0] + states[1]) / 2
    assert not np.allclose(expected, model.get_bn_state())
    np.testing.assert_allclose(result.bn_state, expected, rtol=1e-5, atol=1e-6)


def test_fresh_run_refuses_an_earlier_runs_checkpoints_and_resume_checks_the_job(
    ray_session, tiny_job
):
    from distnet.errors import DistnetError

    job = tiny_job(train={"max_steps": 2})
    train(job, progress=False, overwrite=True)
    with pytest.raises(DistnetError, match="--resume"):
        train(job, progress=False)
    with pytest.raises(DistnetError, match=r"another \[model\]"):
        train(
            tiny_job(train={"max_steps": 2}, model={"hidden_dims": [8]}),
            progress=False,
            resume=True,
        )
    resumed = train(tiny_job(train={"max_steps": 4}), progress=False, resume=True)
    assert resumed.steps == 4 and len(resumed.loss_history) == 4


def test_early_stopping_after_patience_epochs_without_improvement(ray_session, tiny_job):
    # A learning rate too small to move the validation accuracy: it never improves after
    # the first epoch, so training stops after 1 + patience epochs, not 6.
    job = tiny_job(
        optim={"update_rule": "sgd", "learning_rate": 1e-12},
        train={"num_epochs": 6, "early_stopping_patience": 2},
    )
    result = train(job, progress=False, overwrite=True)
    assert len(result.val_acc_history) == 3
    assert len(set(result.val_acc_history)) == 1
    assert result.steps == 3 * (240 // 40) and result.epochs == 3


def test_on_phase_sees_every_phase_of_steps_and_boundaries_in_order(ray_session, tiny_job):
    from distnet.distributed.hooks import PHASES, Hooks

    phases = []
    job = tiny_job(train={"max_steps": 8, "transport": "tasks"}, checkpoint={"every_steps": 4})
    train(
        job,
        progress=False,
        overwrite=True,
        hooks=Hooks(on_phase=lambda phase, step: phases.append((phase, step))),
    )
    assert {p for p, _ in phases} <= set(PHASES)
    # one step queued behind the one read; a boundary reads every step first
    assert phases[:9] == [
        ("submitted", 0),
        ("submitted", 1),
        ("fetched", 0),
        ("booked", 0),
        ("submitted", 2),
        ("fetched", 1),
        ("booked", 1),
        ("submitted", 3),
        ("fetched", 2),
    ]
    boundary = [(p, s) for p, s in phases if p not in ("submitted", "fetched", "booked")]
    assert boundary == [
        ("checkpointing", 4),
        ("checkpointed", 4),  # every_steps
        ("evaluating", 6),
        ("evaluated", 6),  # an epoch is 6 steps
        ("checkpointing", 6),
        ("checkpointed", 6),
        ("evaluating", 8),
        ("evaluated", 8),  # the run's last step
        ("checkpointing", 8),
        ("checkpointed", 8),
    ]
    assert [s for p, s in phases if p == "booked"] == list(range(8))
