"""Ctrl-C at every phase of a run, then --resume: the books come out exact.

A real SIGINT reaches a driver running in its own process (tests/killer.py): at a seeded
random moment while its actors start, at each phase of hooks.PHASES (the driver sends it
to itself there, through Hooks(on_phase=...)), and at seeded random moments while it
trains; in sync mode with backup workers, async and SSP. Each interrupted driver must end
within 10 s with a checkpoint, and the resumed run must book exactly what an undisturbed
run books: one loss per step, N applied gradients per step, one accuracy per epoch end
(the best validation accuracy among them), every worker's steps counted once. Where the
mode is deterministic (sync without backup workers) the parameters and histories are the
undisturbed run's bit for bit. Every wait is bounded; a hung driver's stacks are dumped.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from killer import Kill, read_result, run_driver, write_job_file

from distnet.distributed.hooks import PHASES

pytestmark = pytest.mark.slow

EPOCHS = 8  # of 3 steps (2 workers), 2 steps (2 + 1 backup): long enough to interrupt
# The n-th time a phase is reached (1-based): past the first epoch end, before the last.
AT = {
    "submitted": 7,
    "fetched": 5,
    "booked": 5,
    "evaluating": 2,
    "evaluated": 2,
    "checkpointing": 3,
    "checkpointed": 3,
    "recovering": 1,
    "recovered": 1,
}
KILL_SERVER_AT = 4  # the step after which a server dies, for the recovery phases
MODES = {
    "sync": {},
    "backup": {"backup_workers": 1},
    "async": {"mode": "async"},
    "ssp": {"mode": "ssp", "staleness": 1},
    "chunked": {"steps_per_call": 3},  # sync, several steps per actor call
}
DETERMINISTIC = ("sync", "chunked")


def job(dataset: str, root, **train) -> dict:
    return {
        "name": "interrupts",
        "seed": 7,
        "data": {"path": dataset},
        "model": {"kind": "fc", "hidden_dims": [16], "weight_scale": 1e-2, "use_batchnorm": True},
        "optim": {"update_rule": "adam", "learning_rate": 1e-3},
        "train": {"num_epochs": EPOCHS, "batch_size": 80, "workers": 2, "num_train_samples": 60}
        | train,
        "checkpoint": {"dir": str(root / "ckpt"), "every_steps": 4},
        "metrics": {"logdir": str(root / "runs")},
    }


@pytest.fixture(scope="module")
def address(ray_session):
    return ray_session.get_runtime_context().gcs_address


def interrupted_then_resumed(job_file, address, out, **interrupt):
    """Run until the SIGINT `interrupt` describes, then --resume to the end; the watches."""
    return resumed_after(run_driver(job_file, address, out, **interrupt), job_file, address, out)


def resumed_after(first, job_file, address, out, steps: int | None = None):
    """`first` ended by its SIGINT within 10 s, saying how to go on (unless all its `steps`
    were done: a SIGINT while Ray disconnects has nothing to tell); then --resume."""
    assert not first.hung, f"hung: {first.phases[-5:]}\n{first.stacks}\n{first.stderr[-3000:]}"
    assert first.returncode == 130, first.stderr[-3000:]
    assert first.interrupt_exit_s is not None and first.interrupt_exit_s <= 10
    if first.steps != steps:
        assert "continue with --resume" in first.stderr
    second = run_driver(job_file, address, out, resume=True)
    assert not second.hung, f"{second.stacks}\n{second.stderr[-3000:]}"
    assert second.returncode == 0, second.stderr[-3000:]
    return first, second


# --- start-up -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sync_run(tiny_dataset, address, tmp_path_factory):
    """A deterministic job and its undisturbed result, with how long its actors took to
    start (from the first worker process to the first step)."""
    root = tmp_path_factory.mktemp("sync")
    job_file = write_job_file(job(tiny_dataset, root), root / "job.toml")
    clean = run_driver(job_file, address, root / "clean")
    assert clean.returncode == 0, clean.stderr[-3000:]
    return job_file, read_result(root / "clean"), clean.first_step_s


@pytest.mark.parametrize("seed", [4, 8])
def test_ctrl_c_while_the_actors_start_leaves_a_checkpoint(sync_run, address, tmp_path, seed):
    job_file, clean, startup_s = sync_run
    at = round(random.Random(seed).uniform(0.0, 0.7 * startup_s), 2)
    first, _ = interrupted_then_resumed(
        job_file, address, tmp_path / "run", schedule=[Kill(at, "interrupt")]
    )
    assert first.steps == 0, f"the SIGINT at {at} s came after a step: not start-up"
    assert_identical(tmp_path / "run", clean)


def assert_identical(out, clean):
    final, kept, summary = read_result(out)
    np.testing.assert_array_equal(final, clean[0])
    np.testing.assert_array_equal(kept, clean[1])
    for key in (
        "loss_history",
        "train_acc_history",
        "val_acc_history",
        "applied_gradients",
        "steps",
        "epochs",
        "best_val_acc",
    ):
        assert summary[key] == clean[2][key], key


# --- every phase, each mode ------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tiny_dataset, address, tmp_path_factory):
    """mode -> (job file, the undisturbed run's result, its duration from the first worker)."""
    made = {}

    def get(mode: str):
        if mode not in made:
            root = tmp_path_factory.mktemp(mode)
            job_file = write_job_file(job(tiny_dataset, root, **MODES[mode]), root / "job.toml")
            clean = run_driver(job_file, address, root / "clean")
            assert clean.returncode == 0, clean.stderr[-3000:]
            assert {phase for phase, _ in clean.phases} == set(PHASES) - {"recovering", "recovered"}
            made[mode] = job_file, read_result(root / "clean"), clean
        return made[mode]

    return get


def assert_books_exact(out, clean, mode: str):
    """The resumed run booked what the undisturbed one did: every step, gradient and epoch
    end once; bit for bit where the mode is deterministic."""
    _, _, summary = read_result(out)
    want = clean[2]
    assert summary["steps"] == want["steps"] == len(summary["loss_history"])
    assert summary["applied_gradients"] == want["applied_gradients"] == 2 * want["steps"]
    assert summary["epochs"] == want["epochs"] == EPOCHS
    assert len(summary["val_acc_history"]) == len(summary["train_acc_history"]) == EPOCHS
    assert summary["best_val_acc"] == max(summary["val_acc_history"])
    if mode in ("async", "ssp"):  # each worker's share depends on timing, their sum not
        assert sum(summary["worker_steps"]) == summary["applied_gradients"]
    if mode in DETERMINISTIC:
        assert_identical(out, clean)


# Every phase in sync mode (the deterministic one: bit for bit) and in one other mode, the
# others taking turns phase by phase, so that each mode meets every kind of phase (per-step,
# boundary, recovery) while the suite stays within its time.
PHASE_CASES = (
    [("sync", phase) for phase in PHASES]
    + [(("backup", "async", "ssp")[i % 3], phase) for i, phase in enumerate(PHASES)]
    # Steps submitted and read in calls of several: the per-step phases and a recovery.
    + [("chunked", phase) for phase in ("submitted", "fetched", "booked", "recovered")]
)


@pytest.mark.parametrize("mode, phase", PHASE_CASES)
def test_ctrl_c_at_each_phase_then_resume(runs, address, tmp_path, mode, phase):
    job_file, clean, _ = runs(mode)
    recovery = phase in ("recovering", "recovered")
    first, _ = interrupted_then_resumed(
        job_file,
        address,
        tmp_path / "run",
        interrupt_at=(phase, AT[phase]),
        kill_server_at=KILL_SERVER_AT if recovery else None,
    )
    assert first.interrupted_in[0] == phase
    assert_books_exact(tmp_path / "run", clean, mode)


def test_several_steps_per_call_book_the_same_run(runs):
    """train.steps_per_call = 3 (calls cut at every epoch end and checkpoint) books exactly
    the run of one step per call."""
    _, chunked, _ = runs("chunked")
    _, sync, _ = runs("sync")
    np.testing.assert_array_equal(chunked[0], sync[0])
    np.testing.assert_array_equal(chunked[1], sync[1])
    for key in ("loss_history", "val_acc_history", "applied_gradients", "steps"):
        assert chunked[2][key] == sync[2][key], key


@pytest.mark.parametrize(
    "mode, seed", [("sync", 2), ("backup", 2), ("async", 1), ("ssp", 1), ("chunked", 3)]
)
def test_ctrl_c_at_seeded_random_moments_then_resume(runs, address, tmp_path, mode, seed):
    job_file, clean, watch = runs(mode)
    rng = random.Random(seed)
    span = watch.trained_s - watch.first_step_s  # the undisturbed run's training
    for attempt in range(3):  # a moment after a faster run had ended tests nothing: draw
        at = round(rng.uniform(0.0, 0.8 * span / 2**attempt), 2)  # again, earlier
        first = run_driver(
            job_file, address, tmp_path / "run", schedule=[Kill(at, "interrupt")], clock="step"
        )
        if first.fired and first.trained_s is None:
            break
        # 130: the SIGINT cut the harness writing the result, after `train` returned.
        assert first.returncode in (0, 130), first.stderr[-3000:]
        if first.fired:  # as `train` returned, not ignored by a run that went on
            assert first.trained_s - first.fired[0][0] < 1.0, (first.fired, first.trained_s)
    assert first.fired and first.trained_s is None, "every SIGINT drawn came after the run"
    resumed_after(first, job_file, address, tmp_path / "run", steps=clean[2]["steps"])
    assert_books_exact(tmp_path / "run", clean, mode)
