"""Check a network's analytic gradients against centered differences.

Builds the network in float64 (dropout seeded, so every loss call sees the same masks),
evaluates it on a small random batch, prints the maximum relative error of each
parameter's gradient, and exits 1 if any is above the threshold (default 1e-6, or 1e-5
with batch or group norm or dropout). With a job file, the network of its [model] is
checked.

The network is a FullyConnectedNet (--hidden-dims, --batchnorm, --dropout), or a conv
net on --image-shape images: --conv is the assignment's ThreeLayerConvNet as its notebook
checks it (3 filters of 3x3, hidden layer of 7), --blocks a ConvNet of the blocks given
as the JSON list of tables a job file would hold, for example
  --blocks '[{"type": "conv", "filters": 4, "norm": "groupnorm", "groups": 2},
             {"type": "pool"}, {"type": "affine", "units": 8}]'

A ReLU input within h of zero (or two near-equal inputs of a max pool) puts a kink under
the centered difference and can fail one parameter on one batch. A wrong gradient is
wrong on every batch, so a parameter that fails is checked again on two more seeds (new
weights and batch) and reported as failed only if it fails on all three.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from distnet.errors import DistnetError

RETRIES = 2


def _dims(text: str) -> list[int]:
    """'100,50' -> [100, 50]; '' -> [] (a linear classifier)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _image_shape(text: str) -> tuple[int, int, int]:
    """'3,16,16' -> (3, 16, 16)."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W (three positive integers), got {text!r}")
    return shape


def _blocks(text: str) -> list:
    try:
        blocks = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"expected a JSON list of blocks ({err})") from None
    if not isinstance(blocks, list):
        raise argparse.ArgumentTypeError(f"expected a JSON list of blocks, got {text!r}")
    return blocks


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "gradcheck",
        help="check a network's gradients numerically",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("job", nargs="?", help="job file (TOML): check the network of its [model]")
    parser.add_argument(
        "--hidden-dims",
        type=_dims,
        default=None,
        metavar="H1,H2,...",
        help="hidden layer sizes (default 100,50; '' for a linear classifier)",
    )
    parser.add_argument(
        "--batchnorm", action="store_true", help="batchnorm after each hidden affine"
    )
    conv = parser.add_mutually_exclusive_group()
    conv.add_argument(
        "--conv",
        action="store_true",
        help="the assignment's ThreeLayerConvNet (3 filters of 3x3, hidden 7)",
    )
    conv.add_argument(
        "--blocks",
        type=_blocks,
        default=None,
        metavar="JSON",
        help="a ConvNet of these blocks (a JSON list of tables, see above)",
    )
    parser.add_argument(
        "--image-shape",
        type=_image_shape,
        default=None,
        metavar="C,H,W",
        help="input of a conv net (default 3,8,8)",
    )
    parser.add_argument("--dropout", type=float, default=None, metavar="P", help="drop probability")
    parser.add_argument("--reg", type=float, default=None, metavar="R", help="L2 regularization")
    parser.add_argument(
        "--weight-scale",
        type=float,
        default=None,
        metavar="S",
        help="std of the initial weights (default 0.2 for fully connected nets, He "
        "initialisation for conv nets; the job's with a job file)",
    )
    parser.add_argument(
        "--input-dim",
        type=int,
        default=15,
        metavar="D",
        help="input size of a fully connected net (default 15)",
    )
    parser.add_argument("--num-classes", type=int, default=10, metavar="C")
    parser.add_argument("--batch-size", type=int, default=5, metavar="N")
    parser.add_argument(
        "--max-checks",
        type=int,
        default=200,
        metavar="K",
        help="entries checked per parameter, drawn at random when it has more (default 200)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, batch and dropout")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        metavar="T",
        help="largest acceptable relative error (default 1e-6; 1e-5 with batchnorm or dropout)",
    )
    parser.set_defaults(run=run)


def _build_model(args, seed: int):
    import numpy as np

    from distnet.models import ConvNet, FullyConnectedNet, ThreeLayerConvNet

    if args.conv or args.blocks is not None:
        settings = {
            "input_dim": args.image_shape or (3, 8, 8),
            "num_classes": args.num_classes,
            "reg": args.reg or 0.0,
            "weight_scale": args.weight_scale,
            "dtype": np.float64,
            "init_seed": seed,
        }
        if args.conv:
            return ThreeLayerConvNet(num_filters=3, filter_size=3, hidden_dim=7, **settings)
        return ConvNet(args.blocks, seed=seed, **settings)
    if args.job is None:
        return FullyConnectedNet(
            [100, 50] if args.hidden_dims is None else args.hidden_dims,
            input_dim=args.input_dim,
            num_classes=args.num_classes,
            dropout=args.dropout or 0.0,
            use_batchnorm=args.batchnorm,
            reg=args.reg or 0.0,
            weight_scale=0.2 if args.weight_scale is None else args.weight_scale,
            dtype=np.float64,
            seed=seed,
            init_seed=seed,
        )
    try:
        from distnet.config import load_job
        from distnet.models import build_model
    except ImportError:
        raise DistnetError("gradcheck JOB.toml needs distnet.config") from None
    from distnet.models.build import CONV_KINDS

    model_config = load_job(args.job).model
    if args.weight_scale is not None:
        model_config = dataclasses.replace(model_config, weight_scale=args.weight_scale)
    if model_config.kind in CONV_KINDS:  # small images: a float64 check at 32x32 takes minutes
        input_dim = args.image_shape or (3, 8, 8)
    elif args.image_shape is not None:
        raise DistnetError(
            "--image-shape is the input of a conv net; this job's "
            f'kind = "{model_config.kind}" takes --input-dim'
        )
    else:
        input_dim = args.input_dim
    model = build_model(model_config, input_dim, args.num_classes, np.float64, seed=seed)
    if model.use_dropout:
        model.dropout_param["seed"] = seed
    return model


def _check(args, seed: int):
    """(model, {parameter: max relative error}) for the weights and batch of `seed`."""
    import numpy as np

    from distnet.gradcheck import check_model_gradients

    model = _build_model(args, seed)
    rng = np.random.default_rng([seed, 1])  # a stream apart from the weights'
    X = rng.standard_normal((args.batch_size, *model.input_shape))
    y = rng.integers(model.num_classes, size=args.batch_size)
    return model, check_model_gradients(model, X, y, max_checks=args.max_checks, seed=seed)


def _describe(model) -> str:
    """The header line's account of the network."""
    blocks = getattr(model, "blocks", None)
    if blocks is not None:
        layers = ", ".join(block.describe() for block in blocks)
        return f"layers {model.num_layers} ({layers}, affine {model.num_classes})"
    return (
        f"layers {model.num_layers}, batchnorm {model.use_batchnorm}, "
        f"dropout {model.dropout_param['p']}"
    )


def run(args) -> int:
    fully_connected = [args.hidden_dims is not None, args.batchnorm, args.dropout is not None]
    conv = args.conv or args.blocks is not None
    if args.job is not None and (any(fully_connected) or args.reg is not None or conv):
        raise DistnetError(
            "--hidden-dims, --batchnorm, --dropout, --conv, --blocks and --reg describe a "
            "network; the job file already does"
        )
    if conv and any(fully_connected):
        raise DistnetError(
            "--hidden-dims, --batchnorm and --dropout describe a fully "
            "connected net; a conv net's layers are --conv or --blocks"
        )
    if args.image_shape is not None and not conv and args.job is None:
        raise DistnetError(
            "--image-shape is the input of a conv net (--conv or --blocks); "
            "a fully connected net takes --input-dim"
        )
    if args.batch_size < 2 or args.input_dim < 1 or args.num_classes < 2 or args.max_checks < 1:
        raise DistnetError(
            "need --batch-size >= 2, --input-dim >= 1, --num-classes >= 2 and --max-checks >= 1"
        )
    model, errors = _check(args, args.seed)
    threshold = args.threshold
    if threshold is None:
        normalized = model.use_batchnorm or model.use_groupnorm
        threshold = 1e-5 if normalized or model.use_dropout else 1e-6
    shape = "x".join(map(str, model.input_shape))
    print(
        f"{type(model).__name__}: {_describe(model)}, reg {model.reg}; float64, "
        f"batch {args.batch_size} x {shape}, seed {args.seed}"
    )
    width = max(len(name) for name in errors)
    for name, error in errors.items():
        print(
            f"{name:<{width}}  max relative error {error:.2e}  "
            f"{'ok' if error <= threshold else 'FAIL'}"
        )

    failed = [name for name, error in errors.items() if not error <= threshold]
    for seed in range(args.seed + 1, args.seed + 1 + RETRIES):
        if not failed:
            break
        _, again = _check(args, seed)
        passed = [name for name in failed if again[name] <= threshold]
        for name in passed:
            print(f"{name}: {again[name]:.2e} with seed {seed}: a ReLU kink, not a wrong gradient")
        failed = [name for name in failed if name not in passed]
    if failed:
        print(f"FAILED: {', '.join(failed)} above threshold {threshold:g} on {RETRIES + 1} seeds")
        return 1
    print(f"all gradients within {threshold:g}")
    return 0
