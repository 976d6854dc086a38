"""Consistency models on a real local Ray: async, SSP, backup workers, compressed gradients.

None of these modes is deterministic, so the tests check what is promised instead: every
gradient applied exactly once and in order (also when workers are killed), the SSP bound,
which gradients backup workers drop, and the bytes compression puts on the wire.
"""

import numpy as np
import pytest
from test_dist_faults import killer

from distnet.distributed.compression import Encoder, topk_count
from distnet.distributed.driver import train
from distnet.distributed.hooks import Hooks
from distnet.distributed.server import ParameterServer, ShardState, shard_bounds
from distnet.errors import DistnetError
from distnet.models import build_model
from distnet.schedules import Schedule


def applied_order(events) -> list[tuple[int, int]]:
    """(worker, local step) of every applied gradient, in the order the servers applied them."""
    return [gradient for event in events for gradient in event.gradients]


def assert_applied_once_in_order(order, worker_steps, first=(0, 0)):
    """Each worker's gradients were applied exactly once each, in local-step order."""
    assert len(order) == len(set(order))
    for worker, count in enumerate(worker_steps):
        steps = [s for w, s in order if w == worker]
        assert steps == list(range(first[worker], count)), worker


def tensorboard_tags(logdir) -> dict[str, list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"histograms": 0, "scalars": 0})
    return events.Reload().Tags()


# --- the server's bookkeeping, without Ray --------------------------------------------------
def test_server_applies_each_worker_step_once_with_its_share_of_the_learning_rate():
    schedule = Schedule("epoch_decay", base_lr=0.1, steps_per_epoch=2, total_steps=8, lr_decay=0.5)
    server = ParameterServer(0, "sgd", {"learning_rate": 0.1}, schedule)
    server.load(ShardState(0, np.zeros(3), worker_steps=[0, 0]))
    lrs = []
    for worker, step in [(0, 0), (1, 0), (1, 1), (0, 1), (0, 2)]:
        params, report = server.apply_gradient(worker, step, 0.25, np.ones(3))
        assert report.received == 1
        lrs.append(report.learning_rate)
    # the schedule counts synchronous-equivalent steps: 2 gradients each, 2 steps an epoch
    assert lrs == [0.1, 0.1, 0.1, 0.1, 0.05]
    np.testing.assert_allclose(params, -0.25 * (4 * 0.1 + 0.05) * np.ones(3))

    replayed, report = server.apply_gradient(1, 1, 0.25, np.ones(3))
    assert report.received == 0
    np.testing.assert_array_equal(replayed, params)
    assert server.get_state().step == 5 and server.get_state().worker_steps == [3, 2]
    with pytest.raises(DistnetError, match="gradient 2 of worker 1 was never applied"):
        server.apply_gradient(1, 3, 0.25, np.ones(3))


def test_server_decodes_compressed_gradients():
    server = ParameterServer(0, "sgd", {"learning_rate": 1.0}, lambda step: 1.0)
    server.load(ShardState(0, np.zeros(4, np.float32)))
    grads = [np.array([1.0, -2.0, 0.5, 3.0], np.float32), np.array([4, 0, 0, -1], np.float32)]
    fp16 = Encoder("fp16").encode(0, grads[0])
    topk = Encoder("topk", ratio=0.5).encode(0, grads[1])
    params, _ = server.apply_gradients(0, [1.0, 3.0], fp16, topk)
    assert params.dtype == np.float32
    np.testing.assert_array_equal(params, -(grads[0] + 3 * grads[1]) / 4)


# --- whole runs ---------------------------------------------------------------------------
def test_async_applies_every_gradient_once_across_worker_kills(ray_session, tiny_job):
    job = tiny_job(
        model={"hidden_dims": [16], "use_batchnorm": True},
        train={"mode": "async", "workers": 2, "servers": 2, "num_epochs": 3},
    )
    kill = killer({2, 6, 9}, lambda group, n: group.worker_pids()[n % 2])
    events = []

    def on_step(event):
        events.append(event)
        kill(event)

    result = train(job, progress=False, overwrite=True, on_step=on_step)
    assert kill.fired == {2, 6, 9}
    steps = 3 * (240 // 2 // 20)  # 3 epochs of each worker's 120 rows in batches of 20
    assert result.steps == len(result.loss_history) == len(events) == steps
    assert len(result.val_acc_history) == 3
    assert result.applied_gradients == sum(result.worker_steps) == 2 * steps
    assert all(len(event.gradients) == 2 for event in events)
    assert_applied_once_in_order(applied_order(events), result.worker_steps)
    assert np.isfinite(result.final_params).all() and result.final_loss < 2.4
    tags = tensorboard_tags(job.metrics.logdir)
    assert "train/staleness" in tags["histograms"]
    for tag in ("worker/steps_per_s/0", "worker/steps_per_s/1", "train/bytes_per_step"):
        assert tag in tags["scalars"]


def test_async_resume_continues_each_worker_at_its_count(ray_session, tiny_job):
    first = train(tiny_job(train={"mode": "async", "max_steps": 3}), progress=False, overwrite=True)
    assert sum(first.worker_steps) == 6
    events = []
    second = train(
        tiny_job(train={"mode": "async", "max_steps": 7}),
        progress=False,
        resume=True,
        on_step=events.append,
    )
    assert second.steps == 7 and len(second.loss_history) == 7
    assert sum(second.worker_steps) == 14 and len(applied_order(events)) == 8
    assert_applied_once_in_order(
        applied_order(events), second.worker_steps, first=first.worker_steps
    )


def test_ssp_never_lets_a_worker_run_more_than_staleness_steps_ahead(ray_session, tiny_job):
    staleness = 2
    job = tiny_job(train={"mode": "ssp", "staleness": staleness, "workers": 2, "max_steps": 6})
    events = []
    result = train(
        job, progress=False, overwrite=True, on_step=events.append, hooks=Hooks(worker_delay_s=0.2)
    )
    order = applied_order(events)
    assert len(order) == result.applied_gradients == 12
    assert_applied_once_in_order(order, result.worker_steps)
    applied, lead = [0, 0], 0
    for worker, step in order:
        # worker started `step` only when the slowest had completed step - staleness, and
        # those updates were submitted to the servers first
        assert step <= min(applied) + staleness, (worker, step, applied)
        lead = max(lead, step - min(applied))
        applied[worker] += 1
    assert lead == staleness  # the slowed-down worker 0 really held worker 1 back


def test_backup_workers_drop_exactly_the_late_gradients(ray_session, tiny_job):
    job = tiny_job(train={"workers": 2, "backup_workers": 1})
    events = []
    result = train(
        job, progress=False, overwrite=True, on_step=events.append, hooks=Hooks(worker_delay_s=0.5)
    )
    steps = 2 * (240 // 3 // 20)  # 3 workers own 80 rows each; per-worker batch 40 / 2
    assert result.steps == len(events) == steps
    for event in events:  # the straggler (worker 0) never made it into a step
        assert event.gradients == [(1, event.step), (2, event.step)]
    group = events[-1].group
    computed = ray_session.get([w.gradients_computed.remote() for w in group.workers])
    assert result.applied_gradients == 2 * steps
    assert result.dropped_gradients == sum(e.dropped for e in events) == computed[0] >= 1
    assert result.applied_gradients + result.dropped_gradients == sum(computed)


def test_compression_cuts_the_bytes_on_the_wire(ray_session, tiny_job):
    runs = {
        codec: train(
            tiny_job(train={"servers": 2, "max_steps": 2, "compression": codec}),
            progress=False,
            overwrite=True,
        )
        for codec in ("none", "fp16", "topk")
    }
    job = tiny_job()
    initial = build_model(job.model, seed=job.seed).params.vector
    size = initial.size
    kept = sum(topk_count(b - a, 0.01) for a, b in shard_bounds(size, 2))
    expected = {"none": 2 * 4 * size, "fp16": 2 * 2 * size, "topk": 2 * 8 * kept}
    for codec, run in runs.items():
        assert run.grad_bytes_per_step == expected[codec], codec
        assert run.bytes_per_step == expected[codec] + 2 * initial.nbytes, codec
    exact = runs["none"].final_params - initial
    rounded = runs["fp16"].final_params - initial
    assert not np.array_equal(rounded, exact)
    np.testing.assert_allclose(rounded, exact, rtol=1e-2, atol=1e-3 * np.abs(exact).max())
    sparse = runs["topk"].final_params - initial
    assert 0 < np.count_nonzero(sparse) <= 2 * 2 * kept  # 2 steps x 2 workers x k per slice
