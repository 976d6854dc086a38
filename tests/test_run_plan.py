"""The run plan and the ledger of a distributed run, without Ray: sizes, schedule,
transport, boundaries; books, checkpoints and the result."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from distnet.checkpoint import latest_checkpoint, load_checkpoint
from distnet.config import JobConfig
from distnet.distributed.ledger import Ledger, TrainingDiverged, fresh_state
from distnet.distributed.plan import RunPlan, actor_batch_sizes
from distnet.distributed.server import ModelState
from distnet.errors import DistnetError
from distnet.metrics import StepStats


def job(tmp_path, **train) -> JobConfig:
    checkpoint = {"every_steps": train.pop("every_steps", 0), "dir": str(tmp_path / "ckpt")}
    return JobConfig.from_dict(
        {
            "name": "plan",
            "data": {"path": str(tmp_path / "data")},
            "model": {"kind": "fc", "hidden_dims": [4]},
            "train": {"batch_size": 40, "workers": 2, "num_epochs": 3} | train,
            "checkpoint": checkpoint,
            "metrics": {"logdir": str(tmp_path / "runs")},
        }
    )


def plan(tmp_path, rows=240, **train) -> RunPlan:
    return RunPlan.for_job(job(tmp_path, **train), rows, param_bytes=400)


def test_steps_follow_the_smallest_shard_and_max_steps_cuts_the_run_not_the_schedule(tmp_path):
    p = plan(tmp_path)  # 2 workers, 120 rows each, 20 per worker step
    assert (p.steps_per_epoch, p.total_steps) == (6, 18)
    assert p.schedule.total_steps == 18 and p.schedule.steps_per_epoch == 6
    p = plan(tmp_path, rows=241, batch_size=41)  # 121 + 120 rows, 21 + 20 per step
    assert p.steps_per_epoch == min(121 // 21, 120 // 20) == 5
    p = plan(tmp_path, max_steps=7)
    assert p.total_steps == 7 and p.schedule.total_steps == 18
    p = plan(tmp_path, backup_workers=1)  # 3 actors of 80 rows, batches of 20
    assert p.steps_per_epoch == 4
    assert actor_batch_sizes(job(tmp_path, batch_size=41, backup_workers=1).train) == [21, 20, 21]


def test_more_workers_than_images_is_refused(tmp_path):
    with pytest.raises(DistnetError, match=r"more workers \(3\) than training images \(2\)"):
        plan(tmp_path, rows=2, batch_size=3, workers=3)


@pytest.mark.parametrize(
    "train,expected",
    [
        ({}, "mesh"),
        ({"transport": "tasks"}, "tasks"),
        ({"backup_workers": 1}, "tasks"),
        ({"mode": "async"}, "tasks"),
        ({"mode": "ssp", "staleness": 1}, "tasks"),
        ({"max_workers": 2}, "tasks"),
    ],
)
def test_the_mesh_only_for_plain_sync_steps(tmp_path, train, expected):
    assert plan(tmp_path, **train).transport == expected


def test_boundaries_are_epoch_ends_the_last_step_and_checkpoint_steps(tmp_path):
    p = plan(tmp_path, max_steps=14, every_steps=4)
    assert [d for d in range(1, 15) if p.ends_epoch(d)] == [6, 12, 14]
    assert [d for d in range(1, 15) if p.at_boundary(d)] == [4, 6, 8, 12, 14]
    assert [p.epochs_ended(d) for d in (0, 1, 6, 7, 12, 14)] == [0, 1, 1, 2, 2, 3]
    assert p.position(13) == (2, 1) and p.epoch_of(12) == 2


def test_plan_and_ledger_import_without_ray():
    code = (
        "import sys, distnet.distributed.plan, distnet.distributed.ledger; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the ledger ---------------------------------------------------------------------
def stats(step, loss=1.0, dropped=None):
    return StepStats(
        step=step,
        loss=loss,
        learning_rate=0.1,
        grad_norm=1.0,
        samples_per_s=1.0,
        step_s=0.1,
        compute_s=[0.05, 0.05],
        server_update_s=0.01,
        grad_bytes=8,
        param_bytes=16,
        dropped=dropped,
    )


@pytest.fixture
def ledger(tmp_path):
    j = job(tmp_path, early_stopping_patience=1)
    p = RunPlan.for_job(j, 240, param_bytes=400)
    initial = ModelState(0, np.zeros(3, np.float32), {}, np.zeros(0, np.float32))
    books = Ledger(j, p, [("W1", (3,), 0, 3)], progress=False)
    books.restart(fresh_state(j, initial))
    yield books
    books.close()


def servers_at(step, value=1.0):
    return ModelState(step, np.full(3, value, np.float32), {"t": step}, np.zeros(0, np.float32))


def test_ledger_books_steps_and_counters_and_stops_at_a_nan(ledger):
    ledger.record(stats(0, 2.0), [(0, 0), (1, 0)])
    ledger.record(stats(1, 1.5, dropped=1), [(1, 1)])
    s = ledger.state
    assert s.history["loss_history"] == [2.0, 1.5]
    assert (s.extra["applied_gradients"], s.extra["dropped_gradients"]) == (3, 1)
    assert (s.extra["grad_bytes"], s.extra["param_bytes"]) == (16, 32)
    with pytest.raises(TrainingDiverged, match="loss became nan at step 2"):
        ledger.record(stats(2, math.nan), [])
    assert len(s.history["loss_history"]) == 2


def test_ledger_keeps_the_best_epoch_and_stops_early(ledger):
    assert ledger.epoch_end_missing(6) and not ledger.epoch_end_missing(5)
    best = np.arange(3, dtype=np.float32)
    ledger.record_epoch(0, 6, 0.3, 0.5, best, np.zeros(0, np.float32))
    assert not ledger.epoch_end_missing(6)
    assert not ledger.improves(0.5) and ledger.improves(0.6)
    ledger.record_epoch(1, 12, 0.4, 0.4, best + 1, None)
    s = ledger.state
    assert s.best_val_acc == 0.5 and s.extra["best_epoch"] == 0
    np.testing.assert_array_equal(s.best_params, best)
    assert ledger.stopped_early()  # patience 1: epoch 1 did not beat epoch 0


def test_ledger_checkpoints_exactly_what_it_booked(ledger):
    for step in range(4):
        ledger.record(stats(step), [(0, step), (1, step)])
    assert ledger.unsaved()
    ledger.save(servers_at(4, 2.0))
    assert not ledger.unsaved()
    saved = load_checkpoint(latest_checkpoint(ledger.job.checkpoint.dir))
    assert (saved.step, saved.epoch, saved.opt_state) == (4, 0, {"t": 4})
    assert saved.history["loss_history"] == [1.0] * 4
    assert saved.extra["applied_gradients"] == 8
    np.testing.assert_array_equal(saved.params, np.full(3, 2.0, np.float32))
    assert ledger.checkpoint_path.endswith("ckpt-00000004.npz")


def test_ledger_books_async_steps_from_the_servers_gradient_counts(tmp_path):
    j = job(tmp_path, mode="async")
    p = RunPlan.for_job(j, 240, param_bytes=400)
    initial = ModelState(0, np.zeros(3, np.float32), {}, np.zeros(0, np.float32))
    books = Ledger(j, p, [], progress=False)
    books.restart(fresh_state(j, initial))
    assert books.worker_steps() == [0, 0]
    books.save(ModelState(14, initial.params, {}, initial.bn_state, [8, 6]))
    books.close()
    assert books.state.step == 7 and books.worker_steps() == [8, 6]


def test_ledger_result_carries_the_books(ledger):
    ledger.record(stats(0, 2.0), [(0, 0), (1, 0)])
    ledger.record_epoch(0, 6, 0.3, 0.5, np.ones(3, np.float32), np.zeros(0, np.float32))
    ledger.save(servers_at(1, 3.0))
    kept = np.ones(3, np.float32)
    result = ledger.result(servers_at(1, 3.0), kept, None, test_acc=0.25, wall=2.0, steps_run=1)
    assert (result.steps, result.epochs, result.final_loss) == (1, 1, 2.0)
    assert (result.val_acc, result.best_val_acc, result.test_acc) == (0.5, 0.5, 0.25)
    assert (result.applied_gradients, result.bytes_per_step) == (2, 24.0)
    assert result.transport == "mesh" and result.samples_per_s == 20.0
    np.testing.assert_array_equal(result.final_params, np.full(3, 3.0, np.float32))
    np.testing.assert_array_equal(result.params, kept)


def test_a_schedule_that_cannot_run_is_one_line_before_ray_starts(tiny_dataset, tmp_path):
    """Warm-up longer than the run: refused with the dataset's size known, Ray not started
    (its start-up would print a token warning on stderr)."""
    out = subprocess.run(
        [sys.executable, "-m", "distnet", "train", "--set", f'data.path="{tiny_dataset}"']
        + ["--set", "optim.lr_decay=1.0", "--set", 'optim.schedule="onecycle"']
        + ["--set", "optim.warmup_steps=100000"]
        + ["--set", f'checkpoint.dir="{tmp_path / "ckpt"}"'],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("distnet: error: warmup_steps=100000 leaves no steps to anneal")
    assert out.stderr.count("\n") == 1, out.stderr
