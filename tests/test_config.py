"""Job configuration: job files, defaults, overrides, and one clear error per mistake."""

import dataclasses
import json
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distnet import optim
from distnet.config import (
    RULE_SETTINGS,
    ConfigError,
    JobConfig,
    OptimConfig,
    TrainConfig,
    UpdateRule,
    apply_overrides,
    load_job,
)
from distnet.errors import DistnetError
from distnet.models import FullyConnectedNet, TwoLayerNet, build_model

REPO = Path(__file__).resolve().parents[1]
JOB_FILES = sorted((REPO / "jobs").glob("*.toml"))


def write_job(tmp_path, text, name="job.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", JOB_FILES, ids=lambda p: p.name)
def test_every_shipped_job_loads_and_round_trips(path):
    job = load_job(path)
    assert job.name == path.stem
    assert JobConfig.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    # A small input for the dense nets (the layout is what counts), CIFAR's images otherwise.
    shape = 12 if job.model.kind in ("two_layer", "fc") else (3, 32, 32)
    model = build_model(job.model, input_dim=shape, seed=0)
    assert model.params.vector.dtype == np.dtype(job.model.dtype)


def test_job_files_cover_the_issue():
    assert {"two_layer.toml", "five_layer.toml", "large.toml"} <= {p.name for p in JOB_FILES}


def test_packaged_default_is_the_two_layer_job():
    assert load_job(None) == load_job(REPO / "jobs" / "two_layer.toml")


def test_two_layer_job_is_the_seed_recipe():
    job = load_job(REPO / "jobs" / "two_layer.toml")
    assert (job.model.kind, job.model.hidden_dims, job.model.reg, job.model.weight_scale) == (
        "two_layer",
        (100,),
        1e-2,
        1e-3,
    )
    assert (job.optim.update_rule, job.optim.rule_config(), job.optim.lr_decay) == (
        "sgd",
        {"learning_rate": 1e-3},
        0.95,
    )
    assert (job.train.num_epochs, job.train.batch_size) == (10, 100)


def test_large_job_has_batchnorm_and_dropout():
    model = load_job(REPO / "jobs" / "large.toml").model
    assert (model.kind, model.hidden_dims, model.use_batchnorm, model.dropout) == (
        "fc",
        (1024, 512, 256),
        True,
        0.3,
    )


def test_empty_file_gives_documented_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTNET_CACHE", str(tmp_path / "cache"))
    job = load_job(write_job(tmp_path, ""))
    assert job == JobConfig.from_dict({})
    assert job.data.path == str(tmp_path / "cache" / "cifar10")
    assert job.checkpoint.dir == "checkpoints/job" and job.metrics.logdir == "runs/job"
    assert (job.train.workers, job.train.batch_size, job.train.mode) == (2, 100, "sync")
    monkeypatch.delenv("DISTNET_CACHE")
    assert JobConfig().data.path == str(Path.home() / ".cache" / "distnet" / "cifar10")


def test_paths_placeholders_and_uris(tmp_path):
    job = load_job(
        write_job(
            tmp_path,
            """
        name = "exp-1"
        [data]
        path = "s3://bucket/~cifar"
        [checkpoint]
        dir = "~/ckpt/{name}/x"
        [metrics]
        logdir = "/runs/{name}"
    """,
        )
    )
    assert job.data.path == "s3://bucket/~cifar"  # URIs are left alone
    assert job.checkpoint.dir == str(Path.home() / "ckpt" / "exp-1" / "x")
    assert job.metrics.logdir == "/runs/exp-1"
    assert JobConfig.from_dict({"data": {"path": "~/d"}}).data.path == str(Path.home() / "d")


def test_ints_are_accepted_as_numbers_and_lists_frozen():
    job = JobConfig.from_dict(
        {"optim": {"learning_rate": 1}, "model": {"kind": "fc", "hidden_dims": [3, 2]}}
    )
    assert job.optim.learning_rate == 1.0 and type(job.optim.learning_rate) is float
    assert job.model.hidden_dims == (3, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.train.workers = 3
    # replace() re-validates, so a copy can never become invalid either.
    with pytest.raises(ConfigError, match="train.batch_size"):
        dataclasses.replace(job.train, workers=1000)


BAD = [
    ({"train": {"workers": True}}, "train.workers must be an integer, got true"),
    ({"train": {"workers": 2.0}}, "train.workers must be an integer"),
    ({"optim": {"learning_rate": "1e-3"}}, 'optim.learning_rate must be a number, got "1e-3"'),
    ({"data": {"verify": 1}}, "data.verify must be true or false"),
    ({"model": {"hidden_dims": 100}}, "model.hidden_dims must be a list of integers"),
    ({"model": {"kind": "cnn"}}, 'model.kind must be one of "two_layer", "fc"'),
    ({"train": {"wrokers": 2}}, "unknown key train.wrokers (did you mean train.workers?)"),
    ({"trian": {}}, "unknown key trian (did you mean train?)"),
    ({"train": 3}, "train must be a table"),
    ({"name": "my job"}, "name must be letters, digits"),
    ({"seed": -1}, "seed must be in [0, 2**32)"),
    ({"data": {"md5": "xyz"}}, "data.md5 must be 32 hex digits"),
    ({"data": {"shards": 0}}, "data.shards must be >= 1, got 0"),
    ({"data": {"md5": "0" * 32, "verify": False}}, 'data.md5 = "000'),
    ({"data": {"path": ""}}, "data.path must be a non-empty path"),
    (
        {"model": {"hidden_dims": [100, 50]}},
        'model.hidden_dims must be one layer for kind = "two_layer"',
    ),
    ({"model": {"hidden_dims": []}}, "model.hidden_dims must be one layer"),
    (
        {"model": {"kind": "fc", "hidden_dims": [10, 0]}},
        "model.hidden_dims must be a list of positive",
    ),
    (
        {"model": {"use_batchnorm": True}},
        'model.use_batchnorm = true applies only with kind = "fc"',
    ),
    ({"model": {"dropout": 0.5}}, "model.dropout = 0.5 applies only with kind"),
    ({"model": {"kind": "fc", "dropout": 1.0}}, "model.dropout must be in [0, 1), got 1.0"),
    ({"model": {"weight_scale": 0}}, "model.weight_scale must be > 0"),
    ({"model": {"reg": -0.1}}, "model.reg must be >= 0"),
    ({"model": {"dtype": "float16"}}, "model.dtype must be one of"),
    ({"optim": {"learning_rate": -1e-3}}, "optim.learning_rate must be > 0"),
    ({"optim": {"learning_rate": float("inf")}}, "optim.learning_rate must be finite"),
    ({"optim": {"beta1": 0.9}}, 'optim.beta1 = 0.9 has no effect with update_rule = "sgd"'),
    ({"optim": {"update_rule": "adam", "momentum": 0.9}}, "optim.momentum = 0.9 has no effect"),
    ({"optim": {"update_rule": "adam", "weight_decay": 0.1}}, "optim.weight_decay"),
    ({"optim": {"update_rule": "adam", "beta2": 1.0}}, "optim.beta2 must be in [0, 1)"),
    ({"optim": {"update_rule": "rmsprop", "epsilon": 0}}, "optim.epsilon must be > 0"),
    ({"optim": {"update_rule": "nesterov"}}, "optim.update_rule must be one of"),
    ({"optim": {"lr_decay": 0}}, "optim.lr_decay must be in (0, 1]"),
    (
        {"optim": {"schedule": "cosine", "lr_decay": 0.9}},
        'optim.lr_decay = 0.9 has no effect with schedule = "cosine"',
    ),
    ({"optim": {"schedule": "step"}}, "optim.step_size_epochs is required"),
    ({"optim": {"step_size_epochs": 3}}, "optim.step_size_epochs = 3 has no effect"),
    ({"optim": {"schedule": "onecycle"}}, "optim.warmup_steps must be > 0"),
    (
        {"optim": {"schedule": "cosine", "min_lr": 1}},
        "optim.min_lr must be in [0, optim.learning_rate), got 1.0",
    ),
    ({"optim": {"lr_decay": 1.5}}, "optim.lr_decay must be in (0, 1], got 1.5"),
    (
        {"train": {"batch_size": 3, "workers": 4}},
        "train.batch_size must be at least train.workers (4), got 3",
    ),
    ({"train": {"num_epochs": 0}}, "train.num_epochs must be >= 1"),
    ({"train": {"max_steps": 0}}, "train.max_steps must be >= 1"),
    ({"train": {"mode": "ssp", "staleness": -1}}, "train.staleness must be >= 0"),
    ({"train": {"staleness": 2}}, 'train.staleness = 2 applies only with mode = "ssp"'),
    ({"train": {"mode": "async", "backup_workers": 1}}, "train.backup_workers = 1 applies only"),
    (
        {"train": {"topk_ratio": 0.1}},
        'train.topk_ratio = 0.1 applies only with compression = "topk"',
    ),
    ({"train": {"compression": "topk", "topk_ratio": 0}}, "train.topk_ratio must be in (0, 1]"),
    ({"train": {"worker_cpus": 0}}, "train.worker_cpus must be > 0"),
    ({"checkpoint": {"keep": 0}}, "checkpoint.keep must be >= 1"),
    ({"checkpoint": {"dir": "x/{job}"}}, "checkpoint.dir may only contain the placeholder {name}"),
    ({"metrics": {"logdir": "runs/{"}}, "metrics.logdir may only contain"),
    ({"metrics": {"log_every_steps": 0}}, "metrics.log_every_steps must be >= 1"),
]


@pytest.mark.parametrize("raw, message", BAD, ids=[m.split(" ")[0] for _, m in BAD])
def test_mistakes_name_the_key_and_the_file(raw, message):
    with pytest.raises(ConfigError) as err:
        JobConfig.from_dict(raw, source="jobs/x.toml")
    assert isinstance(err.value, DistnetError)
    assert str(err.value).startswith("jobs/x.toml: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "rule, settings, expected",
    [
        ("sgd", {}, {"learning_rate": 1e-2}),
        ("sgd_momentum", {}, {"learning_rate": 1e-2}),
        ("sgd_momentum", {"momentum": 0.5}, {"learning_rate": 1e-2, "momentum": 0.5}),
        ("sgd_nesterov", {"momentum": 0.9}, {"learning_rate": 1e-2, "momentum": 0.9}),
        (
            "rmsprop",
            {"decay_rate": 0.9, "epsilon": 1e-6},
            {"learning_rate": 1e-2, "decay_rate": 0.9, "epsilon": 1e-6},
        ),
        ("adam", {"beta1": 0.8}, {"learning_rate": 1e-2, "beta1": 0.8}),
        (
            "adamw",
            {"beta2": 0.99, "weight_decay": 0.05},
            {"learning_rate": 1e-2, "beta2": 0.99, "weight_decay": 0.05},
        ),
    ],
)
def test_rule_config_has_only_the_rules_settings(rule, settings, expected):
    optim = OptimConfig(update_rule=rule, learning_rate=1e-2, **settings)
    assert optim.rule_config() == expected


def test_every_update_rule_and_setting_can_be_written_in_a_job_file():
    # The rules and their settings come from distnet.optim; each setting needs a typed
    # [optim] field, unset by default so that the rule's own default applies.
    assert get_args(UpdateRule) == tuple(optim.RULES)
    fields = {f.name: f for f in dataclasses.fields(OptimConfig)}
    for rule in optim.RULES:
        for name in RULE_SETTINGS[rule]:
            assert fields[name].type == "float | None" and fields[name].default is None, name
        config = OptimConfig(update_rule=rule, **{n: 0.5 for n in RULE_SETTINGS[rule]})
        assert config.rule_config() == {"learning_rate": 1e-3} | dict.fromkeys(
            RULE_SETTINGS[rule], 0.5
        )


def test_overrides_are_toml_values_or_bare_strings():
    raw = {"train": {"workers": 2}, "model": {"kind": "fc"}}
    result = apply_overrides(
        raw,
        [
            "train.workers=4",
            "model.hidden_dims=[100, 50]",
            'data.path="x y"',
            "data.source=/tmp/cifar.tar.gz",
            "optim.learning_rate=1e-2",
            "data.verify=false",
            "name=run2",
            "model.use_batchnorm = true",
        ],
    )
    assert result == {
        "train": {"workers": 4},
        "model": {"kind": "fc", "hidden_dims": [100, 50], "use_batchnorm": True},
        "data": {"path": "x y", "source": "/tmp/cifar.tar.gz", "verify": False},
        "optim": {"learning_rate": 1e-2},
        "name": "run2",
    }
    assert raw == {"train": {"workers": 2}, "model": {"kind": "fc"}}  # input left untouched


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.wrkers=4", "--set 'train.wrkers=4': unknown key train.wrkers"),
        ("trian.workers=4", "unknown key trian.workers"),
        ("train=4", "unknown key train"),
        ("train.workers", "expected section.key=value"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        apply_overrides({}, [override])


def test_override_errors_name_file_and_override(tmp_path):
    path = write_job(tmp_path, "[train]\nworkers = 2\n")
    assert load_job(path, ["train.workers=3"]).train.workers == 3
    message = r"job\.toml with --set train\.workers=0: train\.workers must be >= 1"
    with pytest.raises(ConfigError, match=message):
        load_job(path, ["train.workers=0"])
    with pytest.raises(ConfigError, match="train.workers must be an integer"):
        load_job(path, ["train.workers=four"])


def test_unreadable_or_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read job file"):
        load_job(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="cannot read job file"):
        load_job(tmp_path)
    bad = write_job(tmp_path, "[train]\nworkers = = 2\n", "bad.toml")
    with pytest.raises(ConfigError, match=r"bad\.toml: not a valid TOML file: .*line 2"):
        load_job(bad)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="binary.toml: not a valid TOML"):
        load_job(binary)


@given(batch=st.integers(1, 10_000), workers=st.integers(1, 64))
def test_global_batch_split(batch, workers):
    if batch < workers:
        with pytest.raises(ConfigError):
            TrainConfig(batch_size=batch, workers=workers)
        return
    sizes = TrainConfig(batch_size=batch, workers=workers).worker_batch_sizes()
    assert len(sizes) == workers and sum(sizes) == batch
    assert sizes == sorted(sizes, reverse=True) and sizes[0] - sizes[-1] <= 1


def test_build_model_follows_the_config():
    two = build_model(JobConfig().model, input_dim=20, num_classes=5, seed=3)
    assert isinstance(two, TwoLayerNet)
    assert two.params["W1"].shape == (20, 100) and two.params["W2"].shape == (100, 5)
    assert two.params.vector.dtype == np.float32

    cfg = JobConfig.from_dict(
        {
            "model": {
                "kind": "fc",
                "hidden_dims": [7, 6],
                "use_batchnorm": True,
                "dropout": 0.25,
                "weight_scale": 0.5,
            }
        }
    ).model
    fc = build_model(cfg, input_dim=20, dtype="float64", seed=3)
    assert type(fc) is FullyConnectedNet and fc.use_batchnorm and fc.use_dropout
    assert fc.params.vector.dtype == np.float64
    assert [fc.params[f"W{i}"].shape for i in (1, 2, 3)] == [(20, 7), (7, 6), (6, 10)]
    assert 0.3 < fc.params["W1"].std() < 0.7  # weight_scale reached the model

    linear = build_model(
        JobConfig.from_dict({"model": {"kind": "fc", "hidden_dims": []}}).model, input_dim=20
    )
    assert list(linear.params.keys()) == ["W1", "b1"]

    again = build_model(cfg, input_dim=20, dtype="float64", seed=3)
    other = build_model(cfg, input_dim=20, dtype="float64", seed=4)
    assert np.array_equal(again.params.vector, fc.params.vector)
    assert not np.array_equal(other.params.vector, fc.params.vector)


def test_several_steps_per_call_are_at_least_one_and_only_the_meshs(tiny_dataset):
    with pytest.raises(ConfigError, match="train.steps_per_call") as err:
        JobConfig.from_dict({"data": {"path": tiny_dataset}, "train": {"steps_per_call": 0}})
    assert "\n" not in str(err.value)
    # A job that sets it (jobs/two_layer.toml) runs as well with tasks or async, one step
    # per call (the loops: tests/test_dist_interrupts.py's "chunked" runs and the notebooks).
    for other in ({"transport": "tasks"}, {"mode": "async"}, {"backup_workers": 1}):
        job = JobConfig.from_dict(
            {"data": {"path": tiny_dataset}, "train": {"steps_per_call": 4} | other}
        )
        assert job.train.steps_per_call == 4
