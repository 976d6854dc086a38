"""Numerical-gradient helpers, and `distnet gradcheck` run as a user runs it."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distnet.gradcheck import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    grad_check_sparse,
    rel_error,
)


def test_numerical_gradients_of_known_functions():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    grad = eval_numerical_gradient(lambda x: np.sum(x**3), x, verbose=False)
    assert rel_error(grad, 3 * x**2) < 1e-9
    assert np.array_equal(x, [[1.0, -2.0], [0.5, 3.0]])  # restored after perturbing
    df = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert rel_error(eval_numerical_gradient_array(np.sin, x, df), np.cos(x) * df) < 1e-9


def test_grad_check_sparse_reports_each_entry(capsys):
    x = np.linspace(-1, 1, 12).reshape(3, 4)
    errors = grad_check_sparse(lambda x: np.sum(x**2), x, 2 * x, num_checks=5, seed=0)
    assert len(errors) == 5 and max(errors) < 1e-8
    assert capsys.readouterr().out.count("relative error") == 5
    assert max(grad_check_sparse(lambda x: np.sum(x**2), x, 3 * x, num_checks=5, seed=0)) > 0.1


def test_rel_error():
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0
    assert rel_error(np.array([1.0]), np.array([3.0])) == pytest.approx(0.5)
    assert rel_error(np.array([0.0]), np.array([1e-12])) == pytest.approx(1e-4)  # 1e-8 floor


def distnet(*args):
    return subprocess.run(
        [sys.executable, "-m", "distnet", "gradcheck", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    "args, names",
    [
        (["--hidden-dims", "12,8"], ["W1", "b1", "W2", "b2", "W3", "b3"]),
        (
            ["--hidden-dims", "10", "--batchnorm", "--dropout", "0.3", "--reg", "0.5"],
            ["W1", "b1", "gamma1", "beta1", "W2", "b2"],
        ),
        (["--hidden-dims", ""], ["W1", "b1"]),
    ],
)
def test_gradcheck_passes_and_prints_each_parameter(args, names):
    result = distnet(*args, "--input-dim", "6")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:-1]] == names
    assert all(line.endswith("ok") for line in lines[1:-1])
    assert lines[-1].startswith("all gradients within 1e-0")


CONV_BLOCKS = (
    '[{"type": "conv", "filters": 4, "norm": "groupnorm", "groups": 2}, '
    '{"type": "pool"}, {"type": "conv", "filters": 4, "stride": 2, '
    '"norm": "batchnorm"}, {"type": "affine", "units": 6}, '
    '{"type": "dropout", "p": 0.2}]'
)


@pytest.mark.parametrize(
    "args, header, names, threshold",
    [
        (
            ["--conv"],
            "ThreeLayerConvNet: layers 3 (conv 3 3x3 stride 1 pad 1, pool 2x2 "
            "stride 2, affine 7, affine 10), reg 0.0; float64, batch 3 x 3x8x8",
            ["W1", "b1", "W2", "b2", "W3", "b3"],
            "1e-06",
        ),
        # Odd, non-square images; batch and group norm, a stride-2 conv, dropout and reg.
        (
            ["--blocks", CONV_BLOCKS, "--image-shape", "2,10,6", "--reg", "0.3"],
            "ConvNet: layers 4 (conv 4 3x3 stride 1 pad 1 groupnorm(2), pool 2x2 stride 2, "
            "conv 4 3x3 stride 2 pad 1 batchnorm, affine 6, dropout 0.2, affine 10), reg 0.3; "
            "float64, batch 3 x 2x10x6",
            ["W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "W3", "b3", "W4", "b4"],
            "1e-05",
        ),
    ],
)
def test_gradcheck_covers_conv_nets(args, header, names, threshold):
    result = distnet(*args, "--batch-size", "3", "--max-checks", "40")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(header)
    assert [line.split()[0] for line in lines[1:-1]] == names
    assert all(line.endswith("ok") for line in lines[1:-1])
    assert lines[-1] == f"all gradients within {threshold}"


@pytest.mark.parametrize(
    "job, header",
    [
        ("three_layer_convnet", "ThreeLayerConvNet: layers 3 (conv 32 7x7 stride 1 pad 3"),
        ("cifar10_convnet_best", "ConvNet: layers 4 (conv 32 3x3 stride 1 pad 1 batchnorm"),
    ],
)
def test_gradcheck_checks_a_conv_job_files_network_on_small_images(job, header):
    jobs = Path(__file__).parent.parent / "jobs"
    result = distnet(str(jobs / f"{job}.toml"), "--batch-size", "2", "--max-checks", "8")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(header) and "float64, batch 2 x 3x8x8" in lines[0]
    assert all(line.endswith("ok") for line in lines[1:-1])
    # A fully connected job's input is --input-dim, not an image shape.
    result = distnet(str(jobs / "two_layer.toml"), "--image-shape", "3,8,8")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("distnet: error: --image-shape is the input")


def test_gradcheck_exits_1_above_the_threshold():
    result = distnet("--hidden-dims", "6", "--input-dim", "4", "--threshold", "1e-30")
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "above threshold 1e-30 on 3 seeds" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dropout", "1.5"], "distnet: error: dropout must be in [0, 1), got 1.5"),
        (["--batch-size", "1"], "distnet: error: need --batch-size >= 2"),
        (["no/such/job.toml"], "distnet: error: "),
        (["job.toml", "--reg", "0.1"], "distnet: error: --hidden-dims, --batchnorm, --dropout"),
        (["job.toml", "--conv"], "distnet: error: --hidden-dims, --batchnorm, --dropout, --conv"),
        (
            ["--conv", "--batchnorm"],
            "distnet: error: --hidden-dims, --batchnorm and --dropout "
            "describe a fully connected net",
        ),
        (["--image-shape", "3,8,8"], "distnet: error: --image-shape is the input of a conv net"),
        (
            ["--conv", "--image-shape", "3,7,8"],
            "distnet: error: block 1 (pool 2x2 stride 2) on 3x7x8 images: windows of height 2 "
            "at stride 2 do not tile the input height 7",
        ),
        (
            ["--blocks", '[{"type": "conv", "filters": 6, "norm": "groupnorm", "groups": 4}]'],
            "distnet: error: block 0: conv block: groups 4 does not divide its 6 channels",
        ),
    ],
)
def test_bad_values_give_a_one_line_error(args, message):
    result = distnet("--input-dim", "4", *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(message)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--hidden-dims", "ten"],
            "argument --hidden-dims: expected comma-separated integers, got 'ten'",
        ),
        (
            ["--conv", "--image-shape", "3,8"],
            "argument --image-shape: expected C,H,W (three positive integers), got '3,8'",
        ),
        (["--blocks", "[{"], "argument --blocks: expected a JSON list of blocks (Expecting"),
        (["--blocks", '{"type": "pool"}'], "argument --blocks: expected a JSON list of blocks"),
        (["--conv", "--blocks", "[]"], "argument --blocks: not allowed with argument --conv"),
    ],
)
def test_unparsable_argument_is_rejected_by_the_parser(args, message):
    result = distnet(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
