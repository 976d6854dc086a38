"""train.update = "overlapped", the delayed parameter update (docs/overlap.md): the gradient
of step t is computed on p(t) = θ_{t-1} (p(0) = θ_0) while the servers apply step t-1's
update. Held against a numpy reference of that recursion, and deterministic like the
synchronous mode: across server counts, a resume, killed workers and servers."""

import random

import numpy as np
import pytest
from killer import Kill, read_result, run_driver, write_job_file

from distnet import optim
from distnet.checkpoint import latest_checkpoint, load_checkpoint
from distnet.config import ConfigError, JobConfig
from distnet.data.reader import assign_rows, open_split
from distnet.distributed import sampling
from distnet.distributed.driver import train
from distnet.models import build_model

BN_NET = {"hidden_dims": [12, 8], "use_batchnorm": True}
ADAM = {"update_rule": "adam", "learning_rate": 1e-2}


def worker_batches(job, epoch, step):
    """Each worker's (X, y) at (epoch, step), as its actor reads them."""
    reader = open_split(job.data.path, "train")
    out = []
    for i, b in enumerate(job.train.worker_batch_sizes()):
        start, stop = assign_rows(reader.num_rows, i, job.train.workers)
        rows = start + sampling.batch_indices(job.seed, epoch, step, i, stop - start, b)
        out.append(reader.batch(rows))
    return out


def delayed_update_reference(job, steps: int, steps_per_epoch: int, lag: bool = True):
    """θ after `steps` steps of θ_{t+1} = adam(θ_t, Σ_i w_i g_i(p(t))), p(t) = θ_{t-1}
    (lag=False: p(t) = θ_t, the synchronous recursion); batchnorm statistics averaged
    over the workers each step, as the server does."""
    model = build_model(job.model, seed=job.seed)
    theta = model.params.vector.copy()
    lagged, bn = theta.copy(), model.get_bn_state()
    weights = np.array(job.train.worker_batch_sizes(), float) / job.train.batch_size
    config = {"learning_rate": ADAM["learning_rate"]}  # epoch_decay with lr_decay 1: constant
    for t in range(steps):
        grad, bns = np.zeros_like(theta), []
        for w, (X, y) in zip(
            weights, worker_batches(job, *divmod(t, steps_per_epoch)), strict=True
        ):
            replica = build_model(job.model, seed=job.seed)
            replica.params.vector[:] = lagged if lag else theta
            replica.set_bn_state(bn)
            _, grads = replica.loss(X, y)
            grad += w * grads.vector
            bns.append(replica.get_bn_state())
        bn = sum(w * s for w, s in zip(weights, bns, strict=True))
        lagged = theta.copy()
        theta, config = optim.adam(theta.copy(), grad, config)
    return theta, lagged, bn


def test_overlapped_steps_equal_the_delayed_update_recursion(ray_session, tiny_job):
    # 8 steps of 6 per epoch: the lag runs on across an epoch end (with its evaluation).
    job = tiny_job(
        model={**BN_NET, "dtype": "float64"},
        optim=ADAM,
        train={"servers": 2, "max_steps": 8, "update": "overlapped"},
    )
    result = train(job, progress=False, overwrite=True)
    assert result.steps == 8
    theta, lagged, bn = delayed_update_reference(job, 8, steps_per_epoch=6)
    # The biases in front of a batchnorm have a gradient of zero plus roundoff, which Adam
    # turns into steps of lr * roundoff / epsilon: they are held to an absolute 1e-9.
    ahead_of_bn = np.zeros(theta.size, bool)
    for slot in build_model(job.model, seed=job.seed).params.layout:
        if slot.name in ("b1", "b2"):
            ahead_of_bn[slot.offset : slot.offset + slot.size] = True
    saved = load_checkpoint(latest_checkpoint(job.checkpoint.dir))  # the servers' at step 8
    np.testing.assert_array_equal(saved.params, result.final_params)
    for got, want in ((saved.params, theta), (saved.lagged_params, lagged)):
        np.testing.assert_allclose(got[~ahead_of_bn], want[~ahead_of_bn], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(got[ahead_of_bn], want[ahead_of_bn], rtol=0, atol=1e-9)
    # (those biases shift the running means after them by as much)
    np.testing.assert_allclose(saved.bn_state, bn, rtol=1e-10, atol=1e-10)
    # the lag matters: the synchronous recursion ends elsewhere
    sync_theta, _, _ = delayed_update_reference(job, 8, steps_per_epoch=6, lag=False)
    assert np.max(np.abs(sync_theta - theta)) > 1e-4


def overlapped_job(tiny_job, checkpoint=None, **train_keys):
    return tiny_job(
        model={**BN_NET, "dropout": 0.2},
        optim=ADAM,
        train={"num_epochs": 2, "update": "overlapped", **train_keys},
        checkpoint=checkpoint or {},
    )


def assert_same_run(a, b):
    np.testing.assert_array_equal(a.final_params, b.final_params)
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.bn_state, b.bn_state)
    assert a.loss_history == b.loss_history
    assert a.val_acc_history == b.val_acc_history


def test_overlapped_runs_are_deterministic_across_servers_and_checkpoints(ray_session, tiny_job):
    one = train(overlapped_job(tiny_job, servers=1), progress=False, overwrite=True)
    again = train(overlapped_job(tiny_job, servers=1), progress=False, overwrite=True)
    two = train(overlapped_job(tiny_job, servers=2), progress=False, overwrite=True)
    # a checkpoint (a boundary: the send ahead waits for the next step) every 1 and 5 steps
    for every in (1, 5):
        dense = train(
            overlapped_job(tiny_job, checkpoint={"every_steps": every}, servers=2),
            progress=False,
            overwrite=True,
        )
        assert_same_run(dense, one)
    assert one.steps == 12
    assert_same_run(one, again)
    assert_same_run(one, two)
    sync = train(
        tiny_job(model={**BN_NET, "dropout": 0.2}, optim=ADAM, train={"num_epochs": 2}),
        progress=False,
        overwrite=True,
    )
    assert sync.steps == one.steps
    assert sync.loss_history[0] == one.loss_history[0]  # both on θ_0; then p(1) = θ_0 ≠ θ_1
    assert all(a != b for a, b in zip(sync.loss_history[1:], one.loss_history[1:], strict=True))
    assert not np.array_equal(sync.final_params, one.final_params)


def test_a_resume_in_the_middle_of_an_epoch_continues_the_overlapped_run(ray_session, tiny_job):
    undisturbed = train(overlapped_job(tiny_job, servers=2), progress=False, overwrite=True)
    end = load_checkpoint(latest_checkpoint(undisturbed.checkpoint.rsplit("/", 1)[0]))
    # stops after 4 steps of 6 with a checkpoint holding θ_4 and p(4) = θ_3
    first = train(overlapped_job(tiny_job, servers=2, max_steps=4), progress=False, overwrite=True)
    assert first.steps == 4
    resumed = train(overlapped_job(tiny_job, servers=2), progress=False, resume=True)
    assert resumed.steps == 12
    np.testing.assert_array_equal(resumed.final_params, undisturbed.final_params)
    assert resumed.loss_history == undisturbed.loss_history
    # the servers' last state, statistics and lagged parameters included (the kept best
    # ones may differ: the first run's stop at max_steps evaluated once more)
    resumed_end = load_checkpoint(latest_checkpoint(resumed.checkpoint.rsplit("/", 1)[0]))
    for name in ("params", "bn_state", "lagged_params"):
        np.testing.assert_array_equal(getattr(resumed_end, name), getattr(end, name))


@pytest.fixture(scope="module")
def kill_job_file(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("overlap-kills")
    raw = {
        "name": "overlap-kills",
        "seed": 5,
        "data": {"path": tiny_dataset},
        "model": {"kind": "fc", "hidden_dims": [16], "weight_scale": 1e-2, **BN_NET},
        "optim": {"update_rule": "adam", "learning_rate": 1e-3},
        "train": {
            "num_epochs": 30,
            "batch_size": 40,
            "workers": 2,
            "servers": 2,
            "num_train_samples": 100,
            "update": "overlapped",
        },
        "checkpoint": {"dir": str(root / "ckpt"), "every_steps": 4},
        "metrics": {"logdir": str(root / "runs")},
    }
    return write_job_file(raw, tmp_path_factory.mktemp("job") / "job.toml")


@pytest.mark.slow
def test_killed_workers_and_servers_end_as_the_undisturbed_overlapped_run(
    ray_session, kill_job_file, tmp_path
):
    address = ray_session.get_runtime_context().gcs_address
    watch = run_driver(kill_job_file, address, tmp_path / "clean")
    assert watch.returncode == 0, watch.stderr[-3000:]
    clean = read_result(tmp_path / "clean")
    # Seeded moments within the undisturbed run as timed here (fixed seconds would outlive
    # the run on a faster machine): a worker in its first third, a server a little later.
    span, rng = watch.trained_s, random.Random(18)
    first = round(rng.uniform(0.1, 0.33) * span, 2)
    second = round(first + rng.uniform(0.1, 0.3) * span, 2)
    schedule = [Kill(first, "worker"), Kill(second, "server")]
    watch = run_driver(kill_job_file, address, tmp_path / "run", schedule, seed=18)
    assert not watch.hung, f"hung after {watch.fired}:\n{watch.stacks}\n{watch.stderr[-3000:]}"
    assert watch.returncode == 0, watch.stderr[-3000:]
    assert [target for _, target, _ in watch.fired] == ["worker", "server"]
    assert watch.max_gap_s <= 60
    final, kept, summary = read_result(tmp_path / "run")
    np.testing.assert_array_equal(final, clean[0])
    np.testing.assert_array_equal(kept, clean[1])
    assert summary["loss_history"] == clean[2]["loss_history"]
    assert summary["val_acc_history"] == clean[2]["val_acc_history"]


@pytest.mark.parametrize(
    "train_keys,named",
    [
        ({"mode": "async"}, "train.mode"),
        ({"mode": "ssp", "staleness": 1}, "train.mode"),
        ({"transport": "tasks"}, "train.transport"),
        ({"backup_workers": 1}, "train.backup_workers"),
        ({"max_workers": 2}, "train.max_workers"),
        ({"update": "delayed"}, "train.update"),
    ],
)
def test_overlapped_update_refuses_what_it_cannot_do(tiny_dataset, train_keys, named):
    raw = {
        "data": {"path": tiny_dataset},
        "train": {"update": "overlapped", **train_keys},
    }
    with pytest.raises(ConfigError, match=named) as err:
        JobConfig.from_dict(raw)
    assert "\n" not in str(err.value)
