"""Checkpoints: bit-exact round trips, atomic writes under crashes, pruning, bad files."""

import os
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from distnet.atomic import atomic_write
from distnet.checkpoint import (
    CheckpointError,
    TrainState,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from distnet.config import JobConfig


def make_state(step=7, dtype=np.float32, with_bn=True, with_best=True, size=1000, seed=0):
    rng = np.random.default_rng(seed)
    params = rng.standard_normal(size).astype(dtype)
    # Values that a lossy or text round trip would change: denormals, -0.0, huge, nan.
    params[:4] = [np.finfo(dtype).smallest_subnormal, -0.0, np.finfo(dtype).max, np.nan]
    return TrainState(
        step=step,
        epoch=step // 3,
        params=params,
        opt_state={
            "m": rng.standard_normal(size).astype(dtype),
            "v": rng.random(size).astype(dtype),
            "t": step,
            "learning_rate": np.float32(1e-3) * 0.95,  # a float32 scalar
        },
        bn_state=rng.standard_normal(40).astype(dtype) if with_bn else np.zeros(0, dtype),
        best_params=rng.standard_normal(size).astype(dtype) if with_best else None,
        best_val_acc=0.4567,
        history={
            "loss_history": [float(x) for x in rng.random(50).astype(np.float32)],
            "train_acc_history": [0.1, 1 / 3],
            "val_acc_history": [],
        },
        config=JobConfig().to_dict(),
        extra={"rng_epoch": 2, "note": "résumé", "wall_s": 12.5},
        best_bn_state=rng.standard_normal(40).astype(dtype) if with_bn and with_best else None,
    )


def assert_bit_equal(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


def assert_states_equal(loaded, state):
    assert (loaded.step, loaded.epoch, loaded.best_val_acc) == (
        state.step,
        state.epoch,
        state.best_val_acc,
    )
    for name in ("params", "bn_state", "best_params", "best_bn_state"):
        if getattr(state, name) is None:
            assert getattr(loaded, name) is None
        else:
            assert_bit_equal(getattr(loaded, name), getattr(state, name))
    assert loaded.opt_state.keys() == state.opt_state.keys()
    for key, value in state.opt_state.items():
        if isinstance(value, np.ndarray):
            assert_bit_equal(loaded.opt_state[key], value)
        else:
            assert loaded.opt_state[key] == value
            assert isinstance(loaded.opt_state[key], int) == isinstance(value, (int, np.integer))
    assert loaded.history == state.history
    assert loaded.config == state.config
    assert loaded.extra == state.extra


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_bn", [True, False])
@pytest.mark.parametrize("with_best", [True, False])
def test_round_trip_is_bit_exact(tmp_path, dtype, with_bn, with_best):
    state = make_state(dtype=dtype, with_bn=with_bn, with_best=with_best)
    path = save_checkpoint(tmp_path, state, keep=3)
    assert path == tmp_path / "ckpt-00000007.npz"
    assert_states_equal(load_checkpoint(path), state)
    assert JobConfig.from_dict(load_checkpoint(path).config) == JobConfig()


def test_file_is_a_plain_npz_without_pickles(tmp_path):
    path = save_checkpoint(tmp_path, make_state(), keep=1)
    with np.load(path, allow_pickle=False) as archive:
        assert not any(archive[name].dtype.hasobject for name in archive.files)
        assert {"params", "bn_state", "best_params", "opt_state/m", "meta"} <= set(archive.files)


def test_keeps_only_the_newest(tmp_path):
    for step in (1, 2, 10, 3, 20):
        save_checkpoint(tmp_path, make_state(step=step, size=10), keep=2)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["ckpt-00000010.npz", "ckpt-00000020.npz"]
    # A run that writes an older step never deletes the file it has just written.
    path = save_checkpoint(tmp_path, make_state(step=5, size=10), keep=1)
    assert path.exists() and list_checkpoints(tmp_path)[0] == path


def test_latest_orders_by_step_and_ignores_other_files(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, make_state(step=99_999_999, size=10), keep=5)
    save_checkpoint(tmp_path, make_state(step=100_000_000, size=10), keep=5)
    (tmp_path / ".ckpt-200000000.npz.abc.tmp").write_bytes(b"partial")
    (tmp_path / "ckpt-300000000.npz.bak").write_bytes(b"x")
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt-100000000.npz"


@pytest.mark.parametrize("keep_bytes", [0, 1, 30, 0.5, -22, -1])
def test_truncated_file_is_an_error_naming_it(tmp_path, keep_bytes):
    path = save_checkpoint(tmp_path, make_state(), keep=1)
    data = path.read_bytes()
    cut = int(len(data) * keep_bytes) if isinstance(keep_bytes, float) else keep_bytes
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_corrupted_parameters_are_detected(tmp_path):
    state = make_state(size=20_000)
    path = save_checkpoint(tmp_path, state, keep=1)
    data = bytearray(path.read_bytes())
    offset = data.find(state.params[1000:1008].tobytes())  # inside the stored params
    assert offset > 0
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path)


def test_missing_file_and_foreign_npz_are_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "ckpt-00000001.npz")
    foreign = tmp_path / "ckpt-00000002.npz"
    np.savez(foreign, params=np.zeros(3))
    with pytest.raises(CheckpointError, match=str(foreign)):
        load_checkpoint(foreign)


class Exploit:
    """Unpickling this object would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_object_arrays_are_refused_and_never_unpickled(tmp_path):
    good = save_checkpoint(tmp_path, make_state(), keep=1)
    crafted = tmp_path / "ckpt-00000008.npz"
    marker = tmp_path / "code-ran"
    with np.load(good, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["params"] = np.array([Exploit(str(marker))], dtype=object)
    np.savez(crafted, allow_pickle=True, **arrays)
    with pytest.raises(CheckpointError, match=str(crafted)):
        load_checkpoint(crafted)
    assert not marker.exists()


def test_state_with_object_array_cannot_be_saved(tmp_path):
    state = make_state()
    with pytest.raises(ValueError, match="opt_state"):
        TrainState(**{**vars(state), "opt_state": {"m": np.array([object()])}})
    with pytest.raises(ValueError, match="flat"):
        TrainState(**{**vars(state), "params": state.params.reshape(10, -1)})
    with pytest.raises(ValueError, match="best_bn_state must have the shape"):
        TrainState(**{**vars(state), "best_bn_state": np.zeros(3, np.float32)})
    # Fields reassigned after construction are checked again before anything is written.
    state.opt_state["v"] = np.array([None, 1.0])
    with pytest.raises(ValueError, match="opt_state"):
        save_checkpoint(tmp_path, state, keep=1)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_directory_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointError, match="cannot write"):
        save_checkpoint(blocker / "ckpts", make_state(), keep=1)


# The child saves checkpoint 1, then may write at most LIMIT bytes per file, so writing the
# (larger) checkpoint 2 fails part way through: SIGXFSZ kills it, or, when ignored, the
# write raises. Either way it is a real crash in the middle of the write.
CRASHING_WRITER = textwrap.dedent("""
    import resource, signal, sys
    from test_checkpoint import make_state
    from distnet.checkpoint import save_checkpoint
    directory, ignore_signal = sys.argv[1], sys.argv[2] == "ignore"
    save_checkpoint(directory, make_state(step=1, size=1000), keep=3)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # CPython ignores SIGXFSZ by default; restore the kernel's action (terminate) to crash.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN if ignore_signal else signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
    try:
        save_checkpoint(directory, make_state(step=2, size=100_000), keep=3)
    except Exception as err:
        print(type(err).__name__, err)
        sys.exit(3)
""")


def run_crashing_writer(directory, mode):
    # `python -c` imports from its working directory first: test_checkpoint from tests/.
    return subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(directory), mode],
        cwd=os.path.dirname(__file__),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_crash_during_write_leaves_previous_checkpoint(tmp_path):
    result = run_crashing_writer(tmp_path, "kill")
    assert result.returncode == -signal.SIGXFSZ, result.stderr
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers and leftovers[0].stat().st_size > 0  # it did die in the middle
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt-00000001.npz"
    assert_states_equal(load_checkpoint(latest_checkpoint(tmp_path)), make_state(step=1, size=1000))
    # The next save in that directory works and does not trip over the leftover.
    save_checkpoint(tmp_path, make_state(step=3, size=10), keep=3)
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt-00000003.npz"


def test_failed_write_raises_and_cleans_up(tmp_path):
    result = run_crashing_writer(tmp_path, "ignore")
    assert result.returncode == 3, result.stderr
    assert result.stdout.startswith("CheckpointError") and "ckpt-00000002.npz" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000001.npz"]
    first = load_checkpoint(tmp_path / "ckpt-00000001.npz")
    assert_states_equal(first, make_state(step=1, size=1000))


def test_a_checkpoint_is_a_zip_of_npy_files(tmp_path):
    # Other tools (numpy alone, any zip reader) can inspect a checkpoint.
    path = save_checkpoint(tmp_path, make_state(), keep=1)
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert "params.npy" in archive.namelist()


def test_atomic_write_replaces_the_whole_file_or_nothing(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write(b"half of the new")
        raise RuntimeError("the writer fails mid-way")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["file.bin"]
    with atomic_write(path) as f:
        f.write(b"new")
        assert path.read_bytes() == b"old"  # readers see the old file until the end
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["file.bin"]
