"""The example notebooks run from top to bottom (nbclient, a real ipykernel), on a small
dataset built here that the notebooks find where they would find the real one
($DISTNET_CACHE/cifar10). Figures go through matplotlib's inline backend (Agg rendering
into PNG outputs, no display), so each plot is really drawn and counted here."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from datagen import make_prepared_dataset
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CELL_TIMEOUT_S = 300  # per cell, a guard against a hang; whole notebooks take well under 60 s
# The test's own Ray and data settings must not reach the notebooks.
_CLEARED_ENV = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "DISTNET_CACHE", "MPLBACKEND")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A DISTNET_CACHE holding cifar10/: 800 train / 200 val / 100 test random images."""
    root = tmp_path_factory.mktemp("cache")
    make_prepared_dataset(root, shards=2, n_train_per_batch=200, n_test=100, num_val=200)
    return root


def run_notebook(
    name: str, cache: Path, workdir: Path, parameters: dict | None = None
) -> nbformat.NotebookNode:
    """Execute examples/`name` in `workdir` (where it writes runs/ and checkpoints/), with
    `parameters` set in a cell after its parameters cell (as papermill injects them)."""
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    if parameters:
        tagged = next(
            i
            for i, cell in enumerate(notebook.cells)
            if "parameters" in cell.metadata.get("tags", [])
        )
        lines = [f"{key} = {value!r}" for key, value in parameters.items()]
        notebook.cells.insert(tagged + 1, nbformat.v4.new_code_cell("\n".join(lines)))
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED_ENV}
    env |= {
        "DISTNET_CACHE": str(cache),
        "TQDM_DISABLE": "1",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        # the kernel spec runs `python`: make it this interpreter, with its packages
        "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
    }
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute(env=env)
    return notebook


def outputs(notebook, kind: str) -> list:
    """Every output of the code cells: "text" (stdout/stderr text) or "png" (figures)."""
    found = []
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            if kind == "text" and out.output_type == "stream":
                found.append(out.text)
            elif kind == "png" and "image/png" in out.get("data", {}):
                found.append(out.data["image/png"])
    return found


def test_stored_notebooks_are_valid_and_start_with_their_parameters():
    names = sorted(path.name for path in EXAMPLES.glob("*.ipynb"))
    # each with a test below
    assert names == ["assignment_flow.ipynb", "conv_nets.ipynb", "distributed.ipynb"]
    for name in names:
        notebook = nbformat.read(EXAMPLES / name, as_version=4)
        nbformat.validate(notebook)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), name


def test_assignment_notebook_checks_gradients_trains_and_plots(cache, tmp_path):
    notebook = run_notebook("assignment_flow.ipynb", cache, tmp_path)
    text = "".join(outputs(notebook, "text"))
    # the data dict of the small dataset, read where the real one would be
    assert "X_train (800, 3, 32, 32) float32" in text and "y_test (100,)" in text
    # the assignment's check (6 parameters, 2 regs), then check_model_gradients on 3 nets
    assert text.count("relative error") == 2 * 6 + 3
    assert text.count("test accuracy:") == 2  # TwoLayerNet and FullyConnectedNet trained
    assert len(outputs(notebook, "png")) == 2  # the histories and the first-layer weights


def test_distributed_notebook_plots_live_survives_a_killed_worker_and_compares(cache, tmp_path):
    notebook = run_notebook("distributed.ipynb", cache, tmp_path)
    text = "".join(outputs(notebook, "text"))
    assert "Ray restarted it as pid" in text
    assert "identical to the run without the kill: True" in text  # the notebook asserts it
    assert "1 worker: " in text and "2 workers / 1 worker:" in text
    assert len(outputs(notebook, "png")) == 3  # two live plots (updated in place), the comparison
    assert (tmp_path / "runs" / "notebook_2w").is_dir()  # written where the notebook ran


def test_conv_notebook_checks_layers_overfits_trains_on_ray_and_shows_filters(cache, tmp_path):
    # The assignment's nets on less data: conv layers in numpy take their time.
    notebook = run_notebook(
        "conv_nets.ipynb",
        cache,
        tmp_path,
        {"NUM_TRAIN": 50, "OVERFIT_EPOCHS": 3, "SUBSET": 200, "DIST_STEPS": 4},
    )
    text = "".join(outputs(notebook, "text"))
    assert "X_train (800, 3, 32, 32) float32" in text
    # fast layers equal to the naive ones: conv forward, dx, dw, db; pool forward, dx
    fast = re.findall(r"^(?:conv|max pool) .*relative error: (\S+)$", text, re.MULTILINE)
    assert len(fast) == 6 and max(map(float, fast)) < 1e-9
    assert text.count("max relative error") == 6  # the gradient check: W1, b1 ... W3, b3
    assert "worst relative error" in text  # check_model_gradients (the notebook asserts it)
    assert text.count("test accuracy:") == 1
    assert "(Epoch 3 / 3)" in text and "2 workers: 4 steps" in text
    # the overfit curves, the Solver net's filters, the distributed net's filters
    assert len(outputs(notebook, "png")) == 3
    assert (tmp_path / "runs" / "notebook_conv").is_dir()
    assert "ThreeLayerConvNet {'W1': (32, 3, 7, 7)" in text
