"""Shared fixtures: one real local Ray for the whole session (started on first use, bound
to 127.0.0.1), and a tiny prepared CIFAR-layout dataset that the tests build themselves."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/datagen.py and friends
# The drivers, CLIs and `ray start` nodes that tests launch import the checkout under test,
# whatever else this environment has installed (an editable install of another checkout).
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(Path(__file__).parent.parent), *filter(None, [os.environ.get("PYTHONPATH")])])

# Four logical CPUs on a 2-core machine: enough for 3 workers and the tests' own tasks.
SESSION_CPUS = 4


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from distnet.distributed.runtime import init_local_ray

    init_local_ray(num_cpus=SESSION_CPUS, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
    """240 train / 60 val / 50 test random images in 4 shards."""
    from datagen import make_prepared_dataset

    return make_prepared_dataset(tmp_path_factory.mktemp("tiny"), shards=4,
                                 n_train_per_batch=60, n_test=50, num_val=60)


@pytest.fixture
def tiny_job(tiny_dataset, tmp_path):
    """A small fc job on the tiny dataset, writing into tmp_path; override with replace_job."""
    from distnet.config import JobConfig

    def make(**sections):
        raw = {
            "name": "tiny", "seed": 3,
            "data": {"path": tiny_dataset},
            "model": {"kind": "fc", "hidden_dims": [16], "weight_scale": 1e-2},
            "optim": {"update_rule": "sgd_momentum", "learning_rate": 1e-2},
            "train": {"num_epochs": 2, "batch_size": 40, "workers": 2,
                      "num_train_samples": 100},
            "checkpoint": {"dir": str(tmp_path / "ckpt")},
            "metrics": {"logdir": str(tmp_path / "runs")},
        }
        for section, values in sections.items():
            if isinstance(values, dict):
                raw.setdefault(section, {}).update(values)
            else:
                raw[section] = values
        return JobConfig.from_dict(raw)

    return make


os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(autouse=True)
def ieee_denormals():
    """Each test starts with IEEE gradual underflow in the main thread: a Solver flushes
    denormals in its thread (by design), which must not leak into later tests (hypothesis
    refuses to generate floats when subnormals cannot be represented)."""
    from distnet.fpenv import flush_denormals

    flush_denormals(False)
