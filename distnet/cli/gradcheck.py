"""Check a network's analytic gradients against centered differences.

Builds the network in float64 (dropout seeded, so every loss call sees the same masks),
evaluates it on a small random batch, prints the maximum relative error of each
parameter's gradient, and exits 1 if any is above the threshold (default 1e-6, or 1e-5
with batchnorm or dropout). With a job file, the network of its [model] is checked.

A ReLU input within h of zero puts a kink under the centered difference and can fail one
parameter on one batch. A wrong gradient is wrong on every batch, so a parameter that
fails is checked again on two more seeds (new weights and batch) and reported as failed
only if it fails on all three.
"""

from __future__ import annotations

import argparse
import dataclasses

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
    parser.add_argument("--dropout", type=float, default=None, metavar="P", help="drop probability")
    parser.add_argument("--reg", type=float, default=None, metavar="R", help="L2 regularization")
    parser.add_argument(
        "--weight-scale",
        type=float,
        default=None,
        metavar="S",
        help="std of the initial weights (default 0.2, or the job's)",
    )
    parser.add_argument("--input-dim", type=int, default=15, metavar="D")
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

    from distnet.models import FullyConnectedNet

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
    model_config = load_job(args.job).model
    if args.weight_scale is not None:
        model_config = dataclasses.replace(model_config, weight_scale=args.weight_scale)
    model = build_model(model_config, args.input_dim, args.num_classes, np.float64, seed=seed)
    if model.use_dropout:
        model.dropout_param["seed"] = seed
    return model


def _check(args, seed: int):
    """(model, {parameter: max relative error}) for the weights and batch of `seed`."""
    import numpy as np

    from distnet.gradcheck import check_model_gradients

    model = _build_model(args, seed)
    rng = np.random.default_rng([seed, 1])  # a stream apart from the weights'
    X = rng.standard_normal((args.batch_size, model.input_dim))
    y = rng.integers(model.num_classes, size=args.batch_size)
    return model, check_model_gradients(model, X, y, max_checks=args.max_checks, seed=seed)


def run(args) -> int:
    network = [args.hidden_dims is not None, args.batchnorm, args.dropout is not None]
    if args.job is not None and (any(network) or args.reg is not None):
        raise DistnetError(
            "--hidden-dims, --batchnorm, --dropout and --reg describe a network; "
            "the job file already does"
        )
    if args.batch_size < 2 or args.input_dim < 1 or args.num_classes < 2 or args.max_checks < 1:
        raise DistnetError(
            "need --batch-size >= 2, --input-dim >= 1, --num-classes >= 2 and --max-checks >= 1"
        )
    model, errors = _check(args, args.seed)
    threshold = args.threshold
    if threshold is None:
        threshold = 1e-5 if model.use_batchnorm or model.use_dropout else 1e-6
    print(
        f"{type(model).__name__}: layers {model.num_layers}, batchnorm {model.use_batchnorm}, "
        f"dropout {model.dropout_param['p']}, reg {model.reg}; float64, "
        f"batch {args.batch_size} x {model.input_dim}, seed {args.seed}"
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
