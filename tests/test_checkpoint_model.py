"""Checkpoints against the model they are loaded for: shapes, dtypes, finite values, step
ranges, and the fallback past damaged newest files."""

import json

import numpy as np
import pytest
from test_checkpoint import assert_states_equal, make_state

from distnet.checkpoint import (
    MAX_STEP,
    CheckpointError,
    CheckpointMismatch,
    ModelSpec,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)


def fitting_state(step=7, **kwargs):
    """make_state with finite parameters (a model can continue from it)."""
    state = make_state(step=step, **kwargs)
    state.params[:] = np.arange(state.params.size) / state.params.size
    return state


def spec_of(state, **kwargs):
    return ModelSpec.like(state.params, state.bn_state, **kwargs)


def rewrite(path, meta=None, **arrays):
    """The checkpoint at `path` with some of its arrays or meta fields replaced, written as
    a crafted file would be (plain np.savez, no TrainState checks)."""
    with np.load(path, allow_pickle=False) as archive:
        content = {name: archive[name] for name in archive.files}
    if meta:
        fields = json.loads(content["meta"].tobytes()) | meta
        content["meta"] = np.frombuffer(json.dumps(fields).encode(), dtype=np.uint8)
    np.savez(path, allow_pickle=False, **(content | arrays))


def one_line_mismatch(path, spec) -> str:
    with pytest.raises(CheckpointMismatch) as info:
        load_checkpoint(path, spec)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message


def test_a_checkpoint_that_fits_the_model_loads(tmp_path):
    state = fitting_state()
    path = save_checkpoint(tmp_path, state, keep=1)
    assert_states_equal(load_checkpoint(path, spec_of(state, max_step=7)), state)
    fresh = fitting_state(with_best=False)  # no best parameters yet, best_val_acc -1
    fresh.best_val_acc = -1.0
    load_checkpoint(save_checkpoint(tmp_path / "fresh", fresh, keep=1), spec_of(fresh))


@pytest.mark.parametrize(
    "change, match",
    [
        (
            {"param_size": 999},
            "params is float32 of shape (1000,), this model needs float32 of shape (999,)",
        ),
        ({"bn_size": 41}, "bn_state is float32 of shape (40,), this model needs float32 of shape"),
        ({"dtype": np.dtype(np.float64)}, "float32 of shape (1000,), this model needs float64"),
        ({"max_step": 6}, "step 7 is beyond this job's 6 steps"),
    ],
)
def test_a_checkpoint_for_another_model_is_named(tmp_path, change, match):
    state = fitting_state()
    path = save_checkpoint(tmp_path, state, keep=1)
    spec = ModelSpec(**{**vars(spec_of(state)), **change})
    assert match in one_line_mismatch(path, spec)


def test_float64_parameters_are_refused_for_a_float32_model(tmp_path):
    state = fitting_state(dtype=np.float64)
    path = save_checkpoint(tmp_path, state, keep=1)
    spec = ModelSpec(state.params.size, state.bn_state.size)  # float32, the models' dtype
    assert "params is float64" in one_line_mismatch(path, spec)


@pytest.mark.parametrize(
    "craft, match",
    [
        (
            lambda s: {"arrays": {"opt_state/m": s.params[:10]}},
            "opt_state['m'] is float32 of shape (10,)",
        ),
        (
            lambda s: {"arrays": {"best_params": s.params.astype(np.float64)}},
            "invalid checkpoint (TrainState.best_params must have the shape and dtype of params)",
        ),
        (lambda s: {"arrays": {"params": np.full_like(s.params, np.nan)}}, "params holds NaN"),
        (lambda s: {"meta": {"best_val_acc": 7.5}}, "best_val_acc 7.5 is not an accuracy"),
        (lambda s: {"meta": {"opt_scalars": {"t": float("inf")}}}, "opt_state['t'] is inf"),
        (
            lambda s: {"arrays": {"history/val_acc_history": np.array([0.5, 3.0])}},
            "val_acc_history holds values outside [0, 1]",
        ),
        (lambda s: {"meta": {"step": 10**15}}, f"must be an integer in [0, {MAX_STEP}]"),
        (lambda s: {"meta": {"step": 3, "epoch": 5}}, "epoch 5 is larger than step 3"),
        (lambda s: {"meta": {"step": "7"}}, "TrainState.step must be an integer"),
    ],
)
def test_crafted_values_are_named(tmp_path, craft, match):
    state = fitting_state()
    path = save_checkpoint(tmp_path, state, keep=1)
    crafted = craft(state)
    rewrite(path, crafted.get("meta"), **crafted.get("arrays", {}))
    assert match in one_line_mismatch(path, spec_of(state))


def test_an_absurd_step_is_refused_even_without_a_model(tmp_path):
    path = save_checkpoint(tmp_path, fitting_state(), keep=1)
    rewrite(path, {"step": 10**18})
    with pytest.raises(CheckpointMismatch, match="step must be an integer in"):
        load_checkpoint(path)


# --- the newest intact checkpoint ------------------------------------------------------------


def test_a_truncated_latest_falls_back_to_the_newest_intact_one(tmp_path):
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, fitting_state(step=step), keep=5)
    for step in (20, 30):
        newest = tmp_path / f"ckpt-{step:08d}.npz"
        newest.write_bytes(newest.read_bytes()[:-100])
    warnings = []
    state = load_latest_checkpoint(tmp_path, spec_of(fitting_state()), warn=warnings.append)
    assert state.step == 10
    assert len(warnings) == 2 and all("\n" not in w for w in warnings)
    assert warnings[0].startswith(f"{tmp_path / 'ckpt-00000030.npz'}: corrupted or truncated")
    assert warnings[0].endswith(
        "moved aside to ckpt-00000030.npz.damaged; continuing from ckpt-00000010.npz"
    )
    # Out of the way: later saves, pruning and lookups see only intact checkpoints.
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt-00000010.npz"
    assert (tmp_path / "ckpt-00000020.npz.damaged").exists()
    save_checkpoint(tmp_path, fitting_state(step=11), keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-00000011.npz"]


def test_the_fallback_is_said_on_stderr(tmp_path, capsys):
    save_checkpoint(tmp_path, fitting_state(step=1), keep=5)
    (tmp_path / "ckpt-00000002.npz").write_bytes(b"PK\x03\x04 cut short")
    assert load_latest_checkpoint(tmp_path).step == 1
    err = capsys.readouterr().err
    assert err.startswith("distnet: warning: ") and err.count("\n") == 1
    assert "ckpt-00000002.npz" in err and "continuing from ckpt-00000001.npz" in err


def test_no_intact_checkpoint_is_an_error_and_none_is_none(tmp_path):
    assert load_latest_checkpoint(tmp_path / "empty") is None
    (tmp_path / "ckpt-00000005.npz").write_bytes(b"")
    (tmp_path / "ckpt-00000006.npz").write_bytes(b"x")
    with pytest.raises(
        CheckpointError,
        match=f"no intact checkpoint in {tmp_path}: .*"
        r"ckpt-00000006.npz.*\(and 1 more\)",
    ):
        load_latest_checkpoint(tmp_path, warn=pytest.fail)


def test_a_newest_checkpoint_of_another_model_is_an_error_not_a_fallback(tmp_path):
    save_checkpoint(tmp_path, fitting_state(step=1), keep=5)
    save_checkpoint(tmp_path, fitting_state(step=2, size=500), keep=5)
    with pytest.raises(
        CheckpointMismatch, match="ckpt-00000002.npz: params is float32 of shape \\(500,\\)"
    ):
        load_latest_checkpoint(tmp_path, spec_of(fitting_state()), warn=pytest.fail)
    assert len(list_checkpoints(tmp_path)) == 2  # nothing moved
