"""Checkpoints on object storage: checkpoint.dir = "s3://...", against a real S3-compatible
server (moto's, on 127.0.0.1) through pyarrow's S3 filesystem, as the data path is tested.

Writing, rotation, loading, the damaged newest moved aside, a training run that writes
there (its TensorBoard logs too), the refusal of an earlier run's directory, --resume from
it and the trained model loaded from it."""

import json

import numpy as np
import pytest
from pyarrow import fs as pafs
from s3server import s3_server
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import distnet
from distnet.checkpoint import (
    CheckpointError,
    TrainState,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)
from distnet.cli import main
from distnet.remote_path import RemotePath, as_path


@pytest.fixture(scope="module")
def s3():
    with s3_server("runs") as server:
        yield server.filesystem, server.uri


def objects(filesystem, prefix):
    selector = pafs.FileSelector(f"runs/{prefix}", recursive=True, allow_not_found=True)
    return sorted(info.base_name for info in filesystem.get_file_info(selector) if info.is_file)


def state(step):
    params = np.random.default_rng(step).standard_normal(50).astype(np.float32)
    return TrainState(
        step=step,
        epoch=step // 10,
        params=params,
        opt_state={"t": step},
        bn_state=np.zeros(0, np.float32),
        best_params=None,
        best_val_acc=-1.0,
        history={"loss_history": [2.3] * step},
        config={"name": "x"},
    )


def test_a_uri_is_a_remote_path_and_file_uris_are_local(s3, tmp_path):
    _, uri = s3
    directory = as_path(uri("a"))
    assert isinstance(directory, RemotePath) and directory.name == "a"
    child = directory / "ckpt-00000001.npz"
    assert str(child).startswith("s3://testing:testing@runs/a/ckpt-00000001.npz?endpoint")
    assert child.with_name("b.npz").name == "b.npz" and "?endpoint" in str(child.with_name("b"))
    assert as_path(f"file://{tmp_path}") == tmp_path and as_path("rel/dir") == as_path("rel/dir")


def test_save_rotate_and_load_on_s3(s3):
    filesystem, uri = s3
    for step in (10, 20, 30, 40):
        saved = save_checkpoint(uri("rotate"), state(step), keep=2)
    assert objects(filesystem, "rotate") == ["ckpt-00000030.npz", "ckpt-00000040.npz"]
    assert [p.name for p in list_checkpoints(uri("rotate"))] == objects(filesystem, "rotate")
    assert latest_checkpoint(uri("rotate")) == saved
    loaded, expected = load_checkpoint(saved), state(40)
    assert (loaded.step, loaded.epoch, loaded.opt_state) == (40, 4, {"t": 40})
    np.testing.assert_array_equal(loaded.params, expected.params)
    assert loaded.history == expected.history
    assert not [name for name in objects(filesystem, "") if ".tmp" in name]
    assert list_checkpoints(uri("nothing/here")) == []
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(uri("rotate/ckpt-00000001.npz"))


def test_a_damaged_newest_object_is_moved_aside(s3):
    filesystem, uri = s3
    save_checkpoint(uri("damaged"), state(5), keep=3)
    with filesystem.open_output_stream("runs/damaged/ckpt-00000009.npz") as stream:
        stream.write(b"PK\x03\x04 cut off")  # an upload of a truncated file
    warnings = []
    assert load_latest_checkpoint(uri("damaged"), warn=warnings.append).step == 5
    assert objects(filesystem, "damaged") == ["ckpt-00000005.npz", "ckpt-00000009.npz.damaged"]
    assert len(warnings) == 1 and "moved aside to ckpt-00000009.npz.damaged" in warnings[0]


@pytest.fixture(scope="module")
def on_s3(s3, ray_session, tiny_dataset):
    """--set arguments of a small job whose checkpoints and TensorBoard logs go to S3."""
    _, uri = s3
    settings = {
        "data.path": tiny_dataset,
        "checkpoint.dir": uri("tiny"),
        "metrics.logdir": uri("tiny-logs"),
        "model.kind": "fc",
        "model.hidden_dims": [16],
        "model.use_batchnorm": True,
        "train.batch_size": 40,
        "train.num_epochs": 2,
    }
    return [
        arg for key, value in settings.items() for arg in ("--set", f"{key}={json.dumps(value)}")
    ]


def test_train_refuse_resume_eval_and_load_model_on_s3(s3, on_s3, capsys, tmp_path):
    filesystem, uri = s3
    assert main(["train", "--json", *on_s3]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["steps"] == 12  # 2 workers x 20 of their 120 rows: 6 steps an epoch
    assert first["checkpoint"] == str(as_path(uri("tiny")) / "ckpt-00000012.npz")
    assert objects(filesystem, "tiny")[-1] == "ckpt-00000012.npz"
    [events] = objects(filesystem, "tiny-logs")  # uploaded whole at the end
    local = tmp_path / events
    local.write_bytes(filesystem.open_input_stream(f"runs/tiny-logs/{events}").read())
    run = EventAccumulator(str(tmp_path)).Reload()
    assert [e.step for e in run.Scalars("accuracy/val")] == [6, 12]

    # A fresh run refuses the earlier run's objects, before Ray, as on a local disk.
    assert main(["train", *on_s3]) == 2
    assert "holds checkpoints of an earlier run" in capsys.readouterr().err
    assert main(["train", "--dry-run", "--resume", *on_s3]) == 0
    assert "continues ckpt-00000012.npz (step 12, epoch 2)" in capsys.readouterr().out

    # --resume with a third epoch continues from the newest object.
    assert main(["train", "--json", "--resume", *on_s3, "--set", "train.num_epochs=3"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert (resumed["steps"], resumed["epochs"]) == (18, 3)
    assert objects(filesystem, "tiny")[-1] == "ckpt-00000018.npz"

    # The trained model, from the URI of the directory or of the file.
    newest = load_checkpoint(uri("tiny/ckpt-00000018.npz"))
    for where in (uri("tiny"), resumed["checkpoint"]):
        model = distnet.load_model(where)
        np.testing.assert_array_equal(model.params.vector, newest.best_params)
        np.testing.assert_array_equal(model.get_bn_state(), newest.best_bn_state)
    assert main(["eval", uri("tiny"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 50

    # --overwrite deletes the objects and starts again.
    assert main(["train", "--json", "--overwrite", *on_s3]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 12
    assert objects(filesystem, "tiny")[-1] == "ckpt-00000012.npz"
