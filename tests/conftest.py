"""Shared fixtures: one real local Ray for the whole session (started on first use, bound
to 127.0.0.1), and a tiny prepared CIFAR-layout dataset that the tests build themselves."""

import inspect
import os
from pathlib import Path

import pytest

# tests/datagen.py and friends are importable through pyproject's pytest `pythonpath`.
# The drivers, CLIs and `ray start` nodes that tests launch import the checkout under test,
# whatever else this environment has installed (an editable install of another checkout).
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(Path(__file__).parent.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
)

# --- markers (registered in pyproject.toml) ---------------------------------------------
# Tests that start Ray in a child process of their own, which none of their fixtures shows.
STARTS_RAY_ITSELF = {
    "test_listeners.py::test_local_ray_listens_on_loopback_only",
    "test_notebooks.py::test_distributed_notebook_plots_live_survives_a_killed_worker_and_compares",
}


def pytest_collection_modifyitems(items):
    """Mark each test from what it uses, so that `pytest -m "not ray"` stays a fast lane:
    `ray` for the ray_session fixture (also through other fixtures) or a Ray of its own,
    `cluster` (and `ray`, `slow`) for raycluster.ray_cluster, `browser` for
    browser.render_page, each found in the test's code or in the code of one of its
    fixtures. Soaks carry their own `slow` mark."""
    for item in items:
        code = _code_of(item)
        marks = set()
        if "ray_session" in item.fixturenames or _name_of(item) in STARTS_RAY_ITSELF:
            marks.add("ray")
        if "ray_cluster(" in code:
            marks |= {"ray", "cluster", "slow"}
        if "render_page(" in code:
            marks.add("browser")
        for mark in sorted(marks):
            item.add_marker(mark)


def _name_of(item) -> str:
    return f"{Path(item.path).name}::{item.originalname}"


def _code_of(item) -> str:
    """The source of the test function and of the fixtures it uses that live in tests/."""
    functions = [getattr(item, "function", None)]
    for definitions in item._fixtureinfo.name2fixturedefs.values():
        functions += [d.func for d in definitions]
    here = Path(__file__).parent
    code = []
    for function in functions:
        try:
            if function is not None and Path(inspect.getfile(function)).parent == here:
                code.append(inspect.getsource(function))
        except (OSError, TypeError):  # builtins, generated code
            pass
    return "\n".join(code)


# Four logical CPUs on a 2-core machine: enough for 3 workers and the tests' own tasks.
SESSION_CPUS = 4


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from distnet.distributed.runtime import init_local_ray

    # Ray gives its raylet a fixed 30 s to register; on a loaded machine that can pass, and a
    # session fixture that fails errors every Ray test. Three tries, then the error.
    for attempt in range(3):
        try:
            init_local_ray(num_cpus=SESSION_CPUS, log_to_driver=False)
            break
        except Exception as err:
            if "timed out during startup" not in str(err) or attempt == 2:
                raise
            ray.shutdown()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
    """240 train / 60 val / 50 test random images in 4 shards."""
    from datagen import make_prepared_dataset

    return make_prepared_dataset(
        tmp_path_factory.mktemp("tiny"), shards=4, n_train_per_batch=60, n_test=50, num_val=60
    )


@pytest.fixture
def tiny_job(tiny_dataset, tmp_path):
    """A small fc job on the tiny dataset, writing into tmp_path; override with replace_job."""
    from distnet.config import JobConfig

    def make(**sections):
        raw = {
            "name": "tiny",
            "seed": 3,
            "data": {"path": tiny_dataset},
            "model": {"kind": "fc", "hidden_dims": [16], "weight_scale": 1e-2},
            "optim": {"update_rule": "sgd_momentum", "learning_rate": 1e-2},
            "train": {"num_epochs": 2, "batch_size": 40, "workers": 2, "num_train_samples": 100},
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
