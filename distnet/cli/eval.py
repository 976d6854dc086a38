"""Score a trained model on a split of its dataset: accuracy, per-class accuracy and the
confusion matrix (rows: the true class, columns: the predicted one).

CHECKPOINT is a checkpoint file or a checkpoint directory (its newest checkpoint is used);
the model has the best-validation parameters. The dataset is the job's data.path unless
--data names another copy of it.
"""

from __future__ import annotations

import argparse
import json
import math


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="score a trained model on test, val or train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint file or directory")
    p.add_argument(
        "--split",
        choices=("test", "val", "train"),
        default="test",
        help="which split to score (default: test)",
    )
    p.add_argument(
        "--data", metavar="DIR_OR_URI", help="the prepared dataset (default: the job's data.path)"
    )
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(run=run)


def run(args) -> int:
    from distnet.inference import evaluate

    ev = evaluate(args.checkpoint, args.split, data=args.data)
    if args.json:
        print(
            json.dumps(
                {
                    "split": ev.split,
                    "count": ev.count,
                    "accuracy": ev.accuracy,
                    "per_class": dict(zip(ev.label_names, _floats(ev.per_class), strict=True)),
                    "label_names": ev.label_names,
                    "confusion": ev.confusion.tolist(),
                }
            )
        )
    else:
        print(describe(ev))
    return 0


def _floats(values) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]  # NaN: class absent


def describe(ev) -> str:
    width = max(6, *(len(name) for name in ev.label_names))
    lines = [
        (
            f"{ev.split}: accuracy {ev.accuracy:.4f} ({int(ev.confusion.trace())} of "
            f"{ev.count} images)"
        ),
        "",
        f"{'class':<{width}}  accuracy  images",
    ]
    for name, acc, n in zip(ev.label_names, ev.per_class, ev.confusion.sum(axis=1), strict=True):
        lines.append(f"{name:<{width}}  {'-' if math.isnan(acc) else f'{acc:.4f}':>8}  {n:>6}")
    cell = max(5, len(str(ev.confusion.max())) + 1)
    lines += [
        "",
        "confusion (rows: true class, columns: predicted)",
        " " * width + "".join(f"{name[: cell - 1]:>{cell}}" for name in ev.label_names),
    ]
    for name, row in zip(ev.label_names, ev.confusion, strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)
