"""TensorBoard logging (metrics.py, event_log.py): what the real tensorboard package reads
back from a run, and a full log disk (a real 64 KiB tmpfs in a private mount namespace)
that costs a warning, never a hang, for a RunLogger and for a whole `distnet train`."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from s3server import s3_server
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata

from distnet.metrics import LAYOUT, RunLogger, StepStats

WARNING = "distnet: warning: TensorBoard logging to "


def stats(step: int, workers: int = 2) -> StepStats:
    return StepStats(
        step=step,
        loss=2.0 - step / 100,
        learning_rate=1e-3,
        grad_norm=0.5,
        samples_per_s=1000.0,
        step_s=0.02,
        compute_s=[0.01 + i / 1000 for i in range(workers)],
        server_update_s=0.004,
        grad_bytes=400,
        param_bytes=800,
    )


def read(logdir) -> EventAccumulator:
    return EventAccumulator(
        str(logdir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0}
    ).Reload()


@pytest.fixture
def written_run(tmp_path):
    logger = RunLogger(str(tmp_path / "run"), log_every_steps=2)
    for step in range(10):
        logger.step(stats(step))
    logger.epoch(10, {"train": 0.5, "val": 0.25}, {"W1": np.arange(12.0).reshape(3, 4)})
    logger.hparams(
        {"optim.update_rule": "adam", "train.workers": 2, "model.dims": [4, 2]},
        {"test_acc": 0.2, "best_val_acc": 0.25},
    )
    logger.close()
    return tmp_path / "run"


def test_scalars_and_histograms_read_back(written_run):
    run = read(written_run)
    assert [e.step for e in run.Scalars("train/loss")] == [0, 2, 4, 6, 8]
    assert [e.value for e in run.Scalars("train/loss")] == pytest.approx(
        [2.0, 1.98, 1.96, 1.94, 1.92]
    )
    assert [e.value for e in run.Scalars("worker/compute_s/1")] == pytest.approx([0.011] * 5)
    assert run.Scalars("time/wait_s")[0].value == pytest.approx(0.02 - 0.011 - 0.004)
    assert run.Scalars("train/bytes_per_step")[0].value == 1200
    assert [(e.step, e.value) for e in run.Scalars("accuracy/val")] == [(10, 0.25)]
    [histogram] = run.Histograms("weights/W1")
    assert histogram.step == 10 and histogram.histogram_value.num == 12
    assert histogram.histogram_value.max == 11


def test_hparams_are_a_session_of_the_run_itself(written_run):
    assert [p.name for p in written_run.parent.iterdir()] == ["run"]  # no <run>/hparams
    run = read(written_run)
    content = run.PluginTagToContent("hparams")
    start = hparams_metadata.parse_session_start_info_plugin_data(
        content["_hparams_/session_start_info"]
    )
    assert start.hparams["optim.update_rule"].string_value == "adam"
    assert start.hparams["train.workers"].number_value == 2
    assert start.hparams["model.dims"].string_value == "[4, 2]"
    experiment = hparams_metadata.parse_experiment_plugin_data(content["_hparams_/experiment"])
    metrics = [m.name.tag for m in experiment.metric_infos]
    assert metrics == ["hparam/test_acc", "hparam/best_val_acc"]
    # The HParams view reads each metric as the last value of that scalar in the session.
    assert [run.Scalars(tag)[-1].value for tag in metrics] == pytest.approx([0.2, 0.25])


def test_custom_scalars_layout_groups_the_curves_and_matches_real_tags(written_run):
    run = read(written_run)
    [event] = run.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    charts = {
        (c.title, ch.title): list(ch.multiline.tag) for c in layout.category for ch in c.chart
    }
    assert charts == {
        (category, title): tags
        for category, group in LAYOUT.items()
        for title, (_, tags) in group.items()
    }
    written = run.Tags()["scalars"]
    for (_, title), patterns in charts.items():  # every chart draws something
        for pattern in patterns:
            assert [t for t in written if re.fullmatch(pattern, t)], (title, pattern)
    per_worker = charts[("time per step (s)", "compute per worker")]
    assert [t for t in written if re.fullmatch(per_worker[0], t)] == [
        "worker/compute_s/0",
        "worker/compute_s/1",
    ]


def test_first_conv_layers_filters_are_an_image_grid_per_epoch(tmp_path):
    """The assignment's filter picture: each filter rescaled to 0..255 on its own, tiled
    row by row, here as a PNG that TensorBoard shows (decoded by Pillow, not by us)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    filters = rng.standard_normal((5, 3, 3, 3))  # 5 RGB 3x3 filters: a 3x3 grid of tiles
    logger = RunLogger(str(tmp_path / "run"))
    for epoch in (1, 2):
        logger.epoch(
            10 * epoch,
            {"val": 0.5},
            {
                "W1": filters * epoch,
                "b1": np.zeros(5),
                "W2": rng.standard_normal((5, 2, 3, 3)),
                "W3": np.ones((4, 10)),
            },
        )
    logger.close()
    run = read(tmp_path / "run")
    assert run.Tags()["images"] == ["filters/W1"]  # the first conv layer's only
    events = run.Images("filters/W1")
    assert [e.step for e in events] == [10, 20]
    pixels = np.asarray(Image.open(io.BytesIO(events[0].encoded_image_string)))
    zoom = 192 // 11 + 1  # 3 tiles of 3 pixels, 1 apart: 11 pixels, repeated up to >= 192
    assert pixels.shape == (11 * zoom, 11 * zoom, 3) == (events[0].height, events[0].width, 3)
    for k in range(5):
        top, left = (k // 3) * 4 * zoom, (k % 3) * 4 * zoom
        f = filters[k].transpose(1, 2, 0)
        expected = np.round(255 * (f - f.min()) / (f.max() - f.min()))
        tile = pixels[top : top + 3 * zoom : zoom, left : left + 3 * zoom : zoom]
        np.testing.assert_array_equal(tile, expected)
    assert not pixels[3 * zoom : 4 * zoom].any()  # the padding between tile rows
    assert (
        not pixels[4 * zoom : 7 * zoom, 8 * zoom :].any() and not pixels[8 * zoom :].any()
    )  # 5 only


def test_fully_connected_runs_log_no_filter_images(written_run):
    assert read(written_run).Tags()["images"] == []


# --- logs on object storage -----------------------------------------------------------------


@pytest.fixture(scope="module")
def s3():
    with s3_server("logs") as server:
        yield server


def eventually(condition, timeout_s: float = 60.0):
    """condition()'s first true value, polled (the uploads happen on the writer thread)."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


def test_a_logdir_on_s3_is_uploaded_at_each_epoch_and_read_by_tensorboard(s3, monkeypatch):
    # TensorBoard's own S3 reader (boto3), as `S3_ENDPOINT=... tensorboard --logdir
    # s3://logs/run` reads it (it takes S3_ENDPOINT when tensorboard is imported)
    from tensorboard.compat.tensorflow_stub.io import gfile

    monkeypatch.setattr(gfile.get_filesystem("s3://logs"), "_s3_endpoint", s3.endpoint)
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    logger = RunLogger(s3.uri("run"), log_every_steps=1)
    staging = logger.log._staging
    assert logger.log.path.startswith(s3.uri("run/events.out.tfevents.").split("?")[0])
    for step in range(5):
        logger.step(stats(step))
    logger.epoch(5, {"val": 0.25}, {"W1": np.ones((4, 3, 3, 3))})  # its flush uploads
    live = eventually(lambda: (run := read("s3://logs/run")).Tags()["images"] and run)
    assert [e.step for e in live.Scalars("train/loss")] == [0, 1, 2, 3, 4]
    assert [e.value for e in live.Scalars("accuracy/val")] == [0.25]
    logger.step(stats(6))
    logger.hparams({"train.workers": 2}, {"test_acc": 0.2})
    logger.close()  # the last upload, then the staging directory goes
    [key] = s3.keys("run")
    assert key.startswith("run/events.out.tfevents.")
    done = read("s3://logs/run")
    assert [e.step for e in done.Scalars("train/loss")] == [0, 1, 2, 3, 4, 6]
    assert [e.value for e in done.Scalars("hparam/test_acc")] == pytest.approx([0.2])
    assert not os.path.exists(staging)


def test_a_logdir_in_a_missing_bucket_is_an_error_at_the_start(s3):
    from distnet.errors import DistnetError

    with pytest.raises(DistnetError, match="cannot create s3://.*nobucket/run"):
        RunLogger(s3.uri("run").replace("@logs/", "@nobucket/"))


def test_a_storage_server_that_goes_away_is_one_warning_naming_the_local_copy(capsys):
    with s3_server("gone") as s3:
        logger = RunLogger(s3.uri("run"), log_every_steps=1)
        logger.step(stats(0))
        logger.log.flush()
        eventually(lambda: s3.keys("run"))
    for step in range(1, 4):  # the server is gone: the next upload fails
        logger.step(stats(step))
    logger.log.flush()
    eventually(lambda: logger.log.failed)
    logger.step(stats(4))  # training goes on; nothing more is logged
    logger.close()
    warning = capsys.readouterr().err
    assert warning.count(WARNING) == 1
    assert "what was logged is in " in warning
    local = warning.split("what was logged is in ")[1].split(")")[0]
    assert [e.step for e in read(os.path.dirname(local)).Scalars("train/loss")] == [0, 1, 2, 3]
    shutil.rmtree(os.path.dirname(local))


# --- a full log disk -------------------------------------------------------------------------

UNSHARE = shutil.which("unshare")
needs_mounts = pytest.mark.skipif(
    UNSHARE is None or subprocess.run([UNSHARE, "-rm", "true"], capture_output=True).returncode,
    reason="needs util-linux unshare with user and mount namespaces (to mount a small tmpfs)",
)


def on_full_disk(mountpoint, *argv, **popen) -> subprocess.Popen:
    """Run argv where `mountpoint` is a fresh 64 KiB tmpfs, in a private mount namespace
    (the mount disappears with the process; nothing to clean up)."""
    mountpoint.mkdir(exist_ok=True)
    script = 'mount -t tmpfs -o size=64k distnet-full "$0" && exec "$@"'
    return subprocess.Popen(
        [UNSHARE, "-rm", "sh", "-c", script, str(mountpoint), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


LOG_UNTIL_DONE = textwrap.dedent("""
    import sys, time, numpy as np
    from distnet.metrics import RunLogger, StepStats
    logger = RunLogger(sys.argv[1] + "/run")
    forever = sys.argv[2] == "forever"
    step = 0
    while forever or step < 20_000:  # ~4 MB of events on a 64 KiB disk
        logger.step(StepStats(step, 1.0, 1e-3, 1.0, 1e3, 0.01, [0.005, 0.006], 0.002))
        if step % 2000 == 1999:
            logger.epoch(step, {"train": 0.5}, {"W": np.random.randn(100, 100)})
        step += 1
        if forever and step % 100 == 0:
            time.sleep(0.01)  # a training loop that goes on until Ctrl-C
    logger.hparams({"a": 1}, {"test_acc": 0.5})
    logger.close()
    print(step)
""")


@needs_mounts
def test_a_full_log_disk_is_one_warning_and_logging_stops(tmp_path):
    process = on_full_disk(
        tmp_path / "full", sys.executable, "-c", LOG_UNTIL_DONE, str(tmp_path / "full"), "20000"
    )
    out, err = process.communicate(timeout=120)  # tensorboardX's writer hung here for good
    assert process.returncode == 0, err
    assert out.strip() == "20000"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(WARNING), err
    assert lines[0].endswith("stopped: No space left on device; training goes on without it")


@needs_mounts
def test_ctrl_c_ends_a_run_whose_log_disk_is_full(tmp_path):
    process = on_full_disk(
        tmp_path / "full", sys.executable, "-c", LOG_UNTIL_DONE, str(tmp_path / "full"), "forever"
    )
    assert process.stderr.readline().startswith(WARNING)  # the disk is full, logging stopped
    time.sleep(0.5)  # still "training"
    assert process.poll() is None
    started = time.monotonic()
    os.kill(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert time.monotonic() - started < 10
    assert process.returncode != 0 and "KeyboardInterrupt" in err


@needs_mounts
def test_distnet_train_with_a_full_log_disk_finishes_with_a_warning(
    ray_session, tiny_dataset, tmp_path
):
    address = ray_session.get_runtime_context().gcs_address
    full = tmp_path / "full"
    process = on_full_disk(
        full,
        sys.executable,
        "-m",
        "distnet",
        "train",
        "--address",
        address,
        "--json",
        "--set",
        f"data.path={json.dumps(tiny_dataset)}",
        "--set",
        "train.workers=2",
        "--set",
        "train.num_epochs=20",
        "--set",
        "train.batch_size=40",
        "--set",
        "metrics.log_every_steps=1",
        "--set",
        f"metrics.logdir={json.dumps(str(full / 'runs'))}",
        "--set",
        f"checkpoint.dir={json.dumps(str(tmp_path / 'ck'))}",
    )
    out, err = process.communicate(timeout=600)  # tensorboardX's queue blocked it for good
    assert process.returncode == 0, err
    summary = json.loads(out)
    assert summary["steps"] == 20 * (240 // 40) and np.isfinite(summary["final_loss"])
    # tqdm's carriage returns share the warning's line on stderr
    warnings = [line for line in err.splitlines() if WARNING in line]
    assert len(warnings) == 1 and "No space left on device" in warnings[0], err
