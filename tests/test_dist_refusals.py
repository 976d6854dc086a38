"""Jobs that cannot run are refused in one line before anything expensive starts: memory
that no machine or cluster here has (budget.py), a batch larger than the data it is drawn
from, and a train shard that a worker finds damaged when it opens it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from s3server import s3_server

from distnet.config import JobConfig
from distnet.distributed import budget
from distnet.distributed.budget import OutOfMemory, estimate
from distnet.errors import DistnetError
from distnet.models import build_model

GB = 10**9


def make_job(**sections) -> JobConfig:
    raw = {
        "data": {"path": "/nonexistent"},
        "model": {"kind": "fc", "hidden_dims": [16]},
        "train": {"workers": 2, "batch_size": 40},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return JobConfig.from_dict(raw)


@pytest.mark.parametrize(
    "model",
    [
        {"kind": "fc", "hidden_dims": [100, 50]},
        {"kind": "fc", "hidden_dims": [64, 32], "use_batchnorm": True, "dtype": "float64"},
        {"kind": "two_layer", "hidden_dims": [10]},
    ],
)
def test_the_parameter_count_is_the_models(model):
    job = make_job(model=model)
    params = build_model(job.model, seed=0).params.vector
    assert estimate(job).params == params.nbytes


@pytest.mark.parametrize(
    "rule, slots", [("sgd", 0), ("sgd_momentum", 1), ("rmsprop", 1), ("adam", 2)]
)
def test_optimizer_state_is_the_rules_arrays(rule, slots):
    need = estimate(make_job(optim={"update_rule": rule}))
    assert need.optimizer == slots * need.params
    assert need.servers == (3 + slots) * need.params


def test_activations_grow_with_the_batch_and_the_evaluated_rows():
    small, large = (
        estimate(make_job(train={"batch_size": b, "eval_batch_size": 1})) for b in (40, 400)
    )
    # 180 more rows per worker, each at least its input as pixels and as float32
    assert large.worker - small.worker >= 180 * 3072 * 5
    assert large.workers == 2 * large.worker
    # the evaluation batch counts only up to the rows a worker evaluates
    capped = estimate(make_job(train={"eval_batch_size": 10**9}), eval_rows=100)
    assert capped.worker == estimate(make_job(train={"eval_batch_size": 100})).worker


CONV_MODELS = [
    {
        "kind": "conv",
        "blocks": [
            {"type": "conv", "filters": 8, "norm": "batchnorm"},
            {"type": "pool"},
            {"type": "conv", "filters": 16, "size": 5, "norm": "groupnorm", "groups": 4},
            {"type": "dropout", "p": 0.5},
            {"type": "pool"},
            {"type": "affine", "units": 32},
        ],
    },
    {"kind": "three_layer_conv", "num_filters": 16, "filter_size": 5, "hidden_dims": [50]},
]


def conv_job(model: dict, batch_size: int, **train) -> JobConfig:
    return JobConfig.from_dict(
        {
            "data": {"path": "/nonexistent"},
            "model": model,
            "train": {"workers": 2, "batch_size": batch_size} | train,
        }
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("model", CONV_MODELS, ids=["conv", "three_layer_conv"])
def test_a_conv_models_parameters_and_activations_are_its_own(model, dtype):
    """The parameters are the model's to the byte; the activations one training step keeps
    per worker batch are a lower bound, but a close one, of what a real forward and
    backward pass allocates, measured with tracemalloc (since the conv layers copy their
    patches in reused cache-sized tiles, about half of the peak is the layers' transient
    buffers, which the estimate leaves out)."""
    import tracemalloc

    import numpy as np

    def job(batch: int) -> JobConfig:
        return conv_job(model | {"dtype": dtype}, batch_size=batch, eval_batch_size=1)

    net = build_model(job(40).model, seed=0)
    assert estimate(job(40)).params == net.params.vector.nbytes
    rows = 20  # a worker's share of 40 more images a step
    activations = estimate(job(80)).worker - estimate(job(40)).worker
    images = np.random.default_rng(0).integers(0, 256, (rows, 3 * 32 * 32), dtype=np.uint8)
    tracemalloc.start()
    try:
        net.loss(images.astype(net.dtype), np.zeros(rows, dtype=np.int64))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 0.5 * peak < activations <= peak, (activations, peak)


def test_a_conv_job_whose_activations_cannot_fit_is_refused():
    """Few parameters (3 MB), but 2 x 10^4 images of 64 x 32 x 32 activations per worker (and
    the first layer's 27-value im2col patches per pixel): more than 16 GB, which an
    estimate that counted the conv layers as an MLP's would not have seen."""
    job = conv_job({"kind": "conv", "blocks": [{"type": "conv", "filters": 64}] * 2}, 40_000)
    assert estimate(job).params < 10**7  # bytes
    with pytest.raises(OutOfMemory, match="one gradient worker needs at least"):
        estimate(job).check_cluster(None, 16 * GB)


def test_a_model_larger_than_the_machine_is_refused_for_the_driver():
    need = estimate(make_job(model={"hidden_dims": [10**9]}))
    with pytest.raises(
        OutOfMemory,
        match=r"the driver alone needs at least 37\.0 TB .* "
        r"more than this machine has \(16\.0 GB\)",
    ):
        need.check_driver(16 * GB)
    estimate(make_job()).check_driver(16 * GB)
    need.check_driver(None)  # an OS that does not say: not refused


def test_the_cluster_check_counts_all_actors_and_the_largest_node():
    need = estimate(make_job(model={"hidden_dims": [100_000]}))  # 1.2 GB of parameters
    with pytest.raises(OutOfMemory, match="more than the Ray cluster has"):
        need.check_cluster(need.cluster - 1, None)
    need.check_cluster(need.cluster, need.worker)
    with pytest.raises(OutOfMemory, match="one gradient worker .* largest node"):
        need.check_cluster(10 * need.cluster, need.worker - 1)
    assert "\n" not in str(need)


def test_a_batch_larger_than_the_data_is_an_error():
    with pytest.raises(
        DistnetError,
        match=r"train.batch_size = 500 is larger than the "
        r"training set \(240 images\)",
    ):
        budget.check_batch(make_job(train={"batch_size": 500}), 240)
    # 4 actors share 240 images (60 each), but each takes half of a 200 batch
    with pytest.raises(DistnetError, match="worker 0's share .* is 100 images, more than its 60"):
        budget.check_batch(make_job(train={"batch_size": 200, "backup_workers": 2}), 240)
    budget.check_batch(make_job(train={"batch_size": 240}), 240)


def test_the_machine_memory_is_the_os_figure():
    import os

    assert budget.machine_memory() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# --- through `distnet train` and `train()` ----------------------------------------------------


def distnet(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distnet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("distnet: error: "), out.stderr
    return out.stderr


def test_an_absurd_model_is_refused_before_ray_or_the_dataset(tmp_path):
    start = time.monotonic()
    # no dataset at all, and no tarball to prepare one from: it is never looked for
    out = distnet(
        "train",
        "--set",
        "model.hidden_dims=[1000000000]",
        "--set",
        f"data.path={json.dumps(str(tmp_path / 'none'))}",
        "--set",
        f"data.source={json.dumps(str(tmp_path / 'none.tar.gz'))}",
    )
    assert "the driver alone needs at least" in one_line(out)
    assert time.monotonic() - start < 60
    assert not (tmp_path / "none").exists()


def test_an_absurd_batch_is_refused_against_the_training_set(tiny_dataset, tmp_path):
    out = distnet(
        "train",
        "--set",
        "train.batch_size=1000000000000",
        "--set",
        f"data.path={json.dumps(tiny_dataset)}",
    )
    assert (
        "train.batch_size = 1000000000000 is larger than the training set (240 images)"
        in one_line(out)
    )


def test_a_job_larger_than_the_ray_cluster_is_refused_before_any_actor(ray_session, tiny_job):
    import ray

    available, _ = budget.cluster_memory()
    assert available == int(
        ray.cluster_resources()["memory"] + ray.cluster_resources()["object_store_memory"]
    )
    # Parameters of available/8 bytes: the driver's 3 copies fit this machine, the
    # actors' 12 (2 workers x 2, the server's 5 with Adam, 3 in the object store) do not.
    hidden = available // 8 // (4 * 3072)
    job = tiny_job(model={"hidden_dims": [hidden]}, optim={"update_rule": "adam"})
    from distnet.distributed.driver import train

    with pytest.raises(OutOfMemory, match="more than the Ray cluster has"):
        train(job, progress=False)


# --- a damaged train shard, found by the worker that opens it ---------------------------------


@pytest.fixture(scope="module")
def s3_uri():
    """A real S3-compatible server (moto's) on 127.0.0.1; yields key -> dataset URI."""
    with s3_server("datasets") as server:
        yield server.uri


def test_a_damaged_train_shard_is_one_line_naming_it(ray_session, s3_uri, tiny_job, tmp_path):
    from datagen import make_cifar_tarball, md5_of
    from killer import actor_pids
    from pyarrow import fs as pafs

    from distnet.data.errors import DataError
    from distnet.data.prepare import prepare_dataset
    from distnet.distributed.driver import train

    tarball = make_cifar_tarball(tmp_path / "c.tar.gz", 60, 50, 0)
    uri = s3_uri("flipped")
    prepare_dataset(
        uri, source=str(tarball), md5=md5_of(tarball), shards=4, num_val=60, progress=False
    )
    filesystem, root = pafs.FileSystem.from_uri(uri)
    key = f"{root}/train/shard-00002-of-00004.arrow"
    with filesystem.open_input_stream(key) as stream:
        content = bytearray(stream.read())
    content[len(content) // 2] ^= 0xFF  # pixels: the size and Arrow metadata still check out
    with filesystem.open_output_stream(key) as stream:
        stream.write(bytes(content))
    workers_before = set(actor_pids("GradientWorker"))
    # The driver checks train shards on S3 by their metadata only: worker 1 finds it.
    with pytest.raises(DataError) as caught:
        train(tiny_job(data={"path": uri}), progress=False)
    message = str(caught.value)
    assert message.startswith(f"shard {key} is corrupt") and "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    deadline = time.monotonic() + 30  # and its actors are gone, not left to the session
    while set(actor_pids("GradientWorker")) - workers_before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not set(actor_pids("GradientWorker")) - workers_before
