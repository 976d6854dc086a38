"""Conv nets under the data-parallel trainer, on a real local Ray and the tiny dataset: every
guarantee the fully connected nets have (test_dist_train.py, test_dist_faults.py), with
tiny conv nets fed (B, 3, 32, 32) images, spatial batch norm, group norm, dropout, flips
and crops; and a bad block stack in a job file is one line before anything starts."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from killer import read_result, run_driver
from test_dist_faults import killer
from test_dist_train import global_batch

from distnet import optim
from distnet.checkpoint import latest_checkpoint, load_checkpoint
from distnet.cli import main
from distnet.config import JobConfig
from distnet.data.reader import open_split
from distnet.distributed.driver import train
from distnet.distributed.hooks import Hooks
from distnet.job_files import job_to_toml
from distnet.models import build_model

# Every kind of block: 32x32 -> conv (batchnorm) -> pool 4 -> 8x8 -> dropout -> strided
# conv (groupnorm) -> 4x4 -> pool -> 2x2 -> affine 8 -> 10 scores; 524 parameters.
BLOCKS = [
    {"type": "conv", "filters": 4, "norm": "batchnorm"},
    {"type": "pool", "size": 4},
    {"type": "dropout", "p": 0.3},
    {
        "type": "conv",
        "filters": 6,
        "size": 2,
        "stride": 2,
        "pad": 0,
        "norm": "groupnorm",
        "groups": 2,
    },
    {"type": "pool"},
    {"type": "affine", "units": 8},
]
# What one step on the whole batch equals: no batch statistics, no dropout masks per worker.
PER_SAMPLE_BLOCKS = [
    block for block in BLOCKS if block["type"] != "dropout" and block.get("norm") != "batchnorm"
]
CONV = {"kind": "conv", "blocks": BLOCKS, "weight_init": "he"}
THREE_LAYER = {
    "kind": "three_layer_conv",
    "num_filters": 3,
    "filter_size": 3,
    "hidden_dims": [8],
    "weight_scale": 1e-2,
}


def conv_job(dataset: str, root: Path, model: dict = CONV, **sections) -> JobConfig:
    """A job of `model` on the tiny dataset (240 train rows), writing into `root`."""
    raw = {
        "name": "conv",
        "seed": 5,
        "data": {"path": dataset},
        "model": model,
        "optim": {"update_rule": "adam", "learning_rate": 1e-3},
        "train": {"num_epochs": 2, "batch_size": 40, "workers": 2, "num_train_samples": 60},
        "checkpoint": {"dir": str(root / "ckpt")},
        "metrics": {"logdir": str(root / "runs")},
    }
    for section, values in sections.items():
        raw[section] = raw.get(section, {}) | values
    return JobConfig.from_dict(raw)


def assert_same_run(run, other) -> None:
    np.testing.assert_array_equal(run.final_params, other.final_params)
    np.testing.assert_array_equal(run.params, other.params)  # the best-val ones
    np.testing.assert_array_equal(run.bn_state, other.bn_state)
    assert run.loss_history == other.loss_history
    assert run.val_acc_history == other.val_acc_history


# --- one step, shards, determinism, batch-norm statistics ----------------------------------


@pytest.mark.parametrize(
    "model,rule", [(THREE_LAYER, "sgd"), (CONV | {"blocks": PER_SAMPLE_BLOCKS}, "adam")]
)
def test_one_sync_step_equals_single_process_step_on_whole_batch(
    ray_session, tiny_dataset, tmp_path, model, rule
):
    job = conv_job(
        tiny_dataset,
        tmp_path,
        model | {"dtype": "float64", "reg": 0.05},
        optim={"update_rule": rule, "learning_rate": 1e-2},
        train={"workers": 3, "batch_size": 40, "max_steps": 1},
    )
    result = train(job, progress=False, overwrite=True)

    net = build_model(job.model, seed=job.seed)
    images, y = open_split(job.data.path, "train", layout="nchw").batch(global_batch(job, 0, 0))
    assert images.shape == (40, 3, 32, 32)
    _, grads = net.loss(images, y)
    expected, _ = optim.RULES[rule](net.params.vector.copy(), grads.vector, {"learning_rate": 1e-2})
    assert result.steps == 1
    np.testing.assert_allclose(result.final_params, expected, rtol=1e-10, atol=0)
    assert not np.array_equal(expected, net.params.vector)  # the step did change something


def test_two_runs_are_identical_and_sharded_servers_change_nothing(
    ray_session, tiny_dataset, tmp_path
):
    """Spatial batch norm, group norm, dropout, flips and crops: all seeded, all equal."""

    def run(servers: int):
        job = conv_job(
            tiny_dataset,
            tmp_path,
            data={"augment_flip": True, "augment_crop_padding": 2},
            train={"servers": servers},
        )
        return train(job, progress=False, overwrite=True)

    first, second, sharded = run(1), run(1), run(3)
    assert first.steps == 2 * 240 // 40 and len(set(first.loss_history)) > 1
    initial = build_model(conv_job(tiny_dataset, tmp_path).model, seed=5)
    assert not np.array_equal(first.final_params, initial.params.vector)
    assert not np.array_equal(first.bn_state, initial.get_bn_state())
    assert_same_run(first, second)
    assert_same_run(first, sharded)


def test_spatial_batchnorm_statistics_are_averaged_across_workers(
    ray_session, tiny_dataset, tmp_path
):
    """Evaluation uses one running mean and variance per channel at the server: the
    weighted mean of the workers' (here equal halves of the batch)."""
    blocks = [
        {"type": "conv", "filters": 4, "norm": "batchnorm"},
        {"type": "pool", "size": 4},
        {"type": "conv", "filters": 5, "norm": "batchnorm"},
    ]
    job = conv_job(
        tiny_dataset,
        tmp_path,
        CONV | {"blocks": blocks},
        train={"workers": 2, "max_steps": 1, "batch_size": 40},
    )
    result = train(job, progress=False, overwrite=True)
    reader = open_split(job.data.path, "train", layout="nchw")

    def statistics_after(rows):  # a replica's running statistics after a step on `rows`
        replica = build_model(job.model, seed=job.seed)
        replica.loss(*reader.batch(rows))
        return replica.get_bn_state()

    states = [statistics_after(half) for half in np.split(global_batch(job, 0, 0), 2)]
    assert result.bn_state.shape == (2 * (4 + 5),)  # running mean and variance per channel
    assert not np.allclose(states[0], states[1])
    np.testing.assert_allclose(result.bn_state, (states[0] + states[1]) / 2, rtol=1e-5, atol=1e-6)


def test_tensorboard_shows_the_fc_scalars_and_the_filters_at_each_epoch(
    ray_session, tiny_dataset, tiny_job, tmp_path
):
    """The run's real event file, read back by tensorboard: a conv run logs every scalar an
    fc run logs, and the first conv layer's 4 filters (3x3, RGB) at each epoch's end."""
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def logged(job):
        train(job, progress=False, overwrite=True)
        return EventAccumulator(job.metrics.logdir, size_guidance={"images": 0}).Reload()

    conv = logged(conv_job(tiny_dataset, tmp_path / "conv", metrics={"log_every_steps": 1}))
    fc = logged(tiny_job(metrics={"log_every_steps": 1}))
    assert set(conv.Tags()["scalars"]) == set(fc.Tags()["scalars"])
    assert fc.Tags()["images"] == [] and conv.Tags()["images"] == ["filters/W1"]
    images = conv.Images("filters/W1")
    assert [image.step for image in images] == [6, 12]  # 2 epochs of 240 / 40 steps
    first, last = (np.asarray(Image.open(io.BytesIO(i.encoded_image_string))) for i in images)
    assert first.shape == last.shape and first.shape[2] == 3 and first.shape[0] >= 192
    assert not np.array_equal(first, last)  # the filters moved


# --- failures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fault_job(tiny_dataset, tmp_path_factory):
    """18 steps (3 epochs of 6), 2 workers, 2 servers, a checkpoint every 4 steps."""
    return conv_job(
        tiny_dataset,
        tmp_path_factory.mktemp("faults"),
        data={"augment_flip": True, "augment_crop_padding": 2},
        train={"num_epochs": 3, "servers": 2},
        checkpoint={"every_steps": 4},
    )


@pytest.fixture(scope="module")
def clean(ray_session, fault_job):
    return train(fault_job, progress=False, overwrite=True)


def test_killed_workers_are_restarted_and_the_run_is_unchanged(ray_session, fault_job, clean):
    on_step = killer({2, 7, 11}, lambda group, n: group.worker_pids()[n % 2])
    result = train(fault_job, progress=False, overwrite=True, on_step=on_step)
    assert on_step.fired == {2, 7, 11}
    assert_same_run(result, clean)


def test_killed_server_is_restored_and_the_run_is_unchanged(ray_session, fault_job, clean):
    on_step = killer({6}, lambda group, n: group.server_pids()[1])
    phases = []
    result = train(
        fault_job,
        progress=False,
        overwrite=True,
        on_step=on_step,
        hooks=Hooks(on_phase=lambda phase, step: phases.append(phase)),
    )
    assert on_step.fired == {6}
    assert "recovering" in phases and "recovered" in phases
    assert_same_run(result, clean)


def test_killed_driver_resumes_with_the_same_result(ray_session, fault_job, clean, tmp_path):
    """SIGKILL the driver (its own process, tests/killer.py's) once it has checkpointed step
    8; `--resume` from that checkpoint ends where the undisturbed run did."""
    directory = fault_job.checkpoint.dir
    for path in Path(directory).glob("*"):
        path.unlink()
    job_file = tmp_path / "job.toml"
    job_file.write_text(job_to_toml(fault_job))
    address = ray_session.get_runtime_context().gcs_address
    driver = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).parent / "killer.py"),
            str(job_file),
            address,
            str(tmp_path / "killed"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in driver.stdout:
            if line.strip() == "phase checkpointed 8":
                os.kill(driver.pid, signal.SIGKILL)
                break
    finally:
        driver.kill()
        _, err = driver.communicate(timeout=60)
    assert driver.returncode == -signal.SIGKILL, err[-3000:]
    interrupted = load_checkpoint(latest_checkpoint(directory))
    assert 8 <= interrupted.step < clean.steps

    resumed = run_driver(job_file, address, tmp_path / "resumed", resume=True)
    assert resumed.returncode == 0 and not resumed.hung, resumed.stderr[-3000:]
    assert resumed.steps == clean.steps - interrupted.step
    final, kept, summary = read_result(tmp_path / "resumed")
    np.testing.assert_array_equal(final, clean.final_params)
    np.testing.assert_array_equal(kept, clean.params)
    assert summary["loss_history"] == clean.loss_history
    assert summary["val_acc_history"] == clean.val_acc_history


# --- bad block stacks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "block,message",
    [
        (
            'type = "pool"\nsize = 3',
            "model.blocks: block 1 (pool 3x3 stride 3) on 4x32x32 images: windows of height 3 at "
            "stride 3 do not tile the input height 32",
        ),
        (
            'type = "conv"\nfilters = 8\nstride = 3',
            "model.blocks: block 1 (conv 8 3x3 stride 3 pad 1) on 4x32x32 images: windows of "
            "height 3 at stride 3 do not tile the padded input height 34",
        ),
        (
            'type = "conv"\nfilters = 6\nnorm = "groupnorm"\ngroups = 4',
            "model.blocks: block 1: conv block: groups 4 does not divide its 6 channels",
        ),
        ('type = "conv"\nfilter = 8', "model.blocks: block 1 (conv): unknown key 'filter'"),
    ],
)
def test_a_bad_block_stack_is_one_line_before_anything_starts(
    tiny_dataset, tmp_path, capsys, block, message
):
    job_file = tmp_path / "bad.toml"
    job_file.write_text(
        f"[data]\npath = {json.dumps(tiny_dataset)}\n"
        f"[checkpoint]\ndir = {json.dumps(str(tmp_path / 'ckpt'))}\n"
        '[model]\nkind = "conv"\n'
        '[[model.blocks]]\ntype = "conv"\nfilters = 4\n'
        f"[[model.blocks]]\n{block}\n"
    )
    status = main(["train", str(job_file)])
    out, err = capsys.readouterr()
    assert status == 2 and out == "", err
    assert err.count("\n") == 1 and err.startswith(f"distnet: error: {job_file}: {message}"), err
    assert not (tmp_path / "ckpt").exists()


def test_ready_conv_jobs_load_and_build(capsys):
    """Both ready conv jobs are listed, and build the nets they describe."""
    from distnet.config import load_job
    from distnet.job_files import find_job

    assert main(["train", "--list"]) == 0
    listed = capsys.readouterr().out
    for name, kind in (
        ("three_layer_convnet", "ThreeLayerConvNet"),
        ("cifar10_convnet_best", "ConvNet"),
    ):
        assert name in listed
        job = load_job(find_job(name))
        assert type(build_model(job.model, seed=0)).__name__ == kind
