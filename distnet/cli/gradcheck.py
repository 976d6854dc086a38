"""Check a network's analytic gradients against centered differences.

Builds the network in float64 (dropout seeded, so every loss call sees the same masks),
evaluates it on a small random batch, prints the maximum relative error of each
parameter's gradient, and exits 1 if any is above the threshold (default 1e-6, or 1e-5
with batchnorm or dropout).
"""

from __future__ import annotations

import argparse

from distnet.errors import DistnetError

_KINK_HINT = (
    "an isolated failure can come from a ReLU input within h of zero (the loss has a kink "
    "there); if only one setting fails, try another --seed"
)


def _dims(text: str) -> list[int]:
    """'100,50' -> [100, 50]; '' -> [] (a linear classifier)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "gradcheck", help="check a network's gradients numerically", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("job", nargs="?", help="job file (TOML): check the network of its [model]")
    parser.add_argument("--hidden-dims", type=_dims, default=[100, 50], metavar="H1,H2,...",
                        help="hidden layer sizes (default 100,50; '' for a linear classifier)")
    parser.add_argument("--batchnorm", action="store_true", help="batchnorm after each hidden affine")
    parser.add_argument("--dropout", type=float, default=0.0, metavar="P", help="drop probability")
    parser.add_argument("--reg", type=float, default=0.0, metavar="R", help="L2 regularization")
    parser.add_argument("--weight-scale", type=float, default=0.2, metavar="S",
                        help="std of the initial weights (default 0.2: well-scaled gradients)")
    parser.add_argument("--input-dim", type=int, default=15, metavar="D")
    parser.add_argument("--num-classes", type=int, default=10, metavar="C")
    parser.add_argument("--batch-size", type=int, default=5, metavar="N")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, batch and dropout")
    parser.add_argument("--threshold", type=float, default=None, metavar="T",
                        help="largest acceptable relative error (default 1e-6; 1e-5 with "
                             "batchnorm or dropout)")
    parser.set_defaults(run=run)


def _build_model(args):
    import numpy as np

    from distnet.models import FullyConnectedNet

    if args.job is None:
        return FullyConnectedNet(
            args.hidden_dims, input_dim=args.input_dim, num_classes=args.num_classes,
            dropout=args.dropout, use_batchnorm=args.batchnorm, reg=args.reg,
            weight_scale=args.weight_scale, dtype=np.float64, seed=args.seed, init_seed=args.seed,
        )
    try:
        from distnet.config import build_model, load_job
    except ImportError:
        raise DistnetError("gradcheck JOB.toml needs distnet.config") from None
    job = load_job(args.job)
    model = build_model(job.model, args.input_dim, args.num_classes, np.float64)
    if model.use_dropout:
        model.dropout_param["seed"] = args.seed
    return model


def run(args) -> int:
    import numpy as np

    from distnet.gradcheck import check_model_gradients

    if args.batch_size < 2 or args.input_dim < 1 or args.num_classes < 2:
        raise DistnetError("need --batch-size >= 2, --input-dim >= 1 and --num-classes >= 2")
    model = _build_model(args)
    threshold = args.threshold
    if threshold is None:
        threshold = 1e-5 if model.use_batchnorm or model.use_dropout else 1e-6
    rng = np.random.default_rng([args.seed, 1])  # a stream apart from the weights'
    X = rng.standard_normal((args.batch_size, model.input_dim))
    y = rng.integers(model.num_classes, size=args.batch_size)

    print(
        f"{type(model).__name__}: layers {model.num_layers}, batchnorm {model.use_batchnorm}, "
        f"dropout {model.dropout_param['p']}, reg {model.reg}; float64, "
        f"batch {args.batch_size} x {model.input_dim}, seed {args.seed}"
    )
    errors = check_model_gradients(model, X, y)
    width = max(len(name) for name in errors)
    for name, error in errors.items():
        print(f"{name:<{width}}  max relative error {error:.2e}  {'ok' if error <= threshold else 'FAIL'}")
    failed = [name for name, error in errors.items() if not error <= threshold]
    if failed:
        print(f"FAILED: {', '.join(failed)} above threshold {threshold:g}; {_KINK_HINT}")
        return 1
    print(f"all gradients within {threshold:g}")
    return 0
