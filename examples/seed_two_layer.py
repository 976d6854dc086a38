"""The seed's training script, unchanged in spirit: CS231n TwoLayerNet trained by the Solver.

    python examples/seed_two_layer.py --source ../shared/data/cifar-10-python.tar.gz \
        --md5 04140a4bf8b940be148901d3b3b8e5fb

Data: the usual split (49,000 train / 1,000 val / 10,000 test, mean image subtracted),
read from the Arrow dataset that `distnet data prepare` writes (prepared here if needed).
"""

import argparse
import time

import numpy as np

from distnet.data.prepare import default_out, ensure_dataset
from distnet.data.reader import open_split
from distnet.models import TwoLayerNet
from distnet.solver import Solver


def get_cifar10_data(path: str) -> dict:
    """The assignment's data dict: X_* float32 (N, 3, 32, 32) mean-subtracted, y_* int."""
    data = {}
    for split, suffix in (("train", "train"), ("val", "val"), ("test", "test")):
        reader = open_split(path, split)
        X, y = reader.batch(np.arange(reader.num_rows))
        data[f"X_{suffix}"], data[f"y_{suffix}"] = X.reshape(-1, 3, 32, 32), y
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=default_out(), help="prepared dataset directory")
    parser.add_argument("--source", help="CIFAR-10 tarball to prepare from")
    parser.add_argument("--md5", help="its MD5, if not the official one")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ensure_dataset(args.data, source=args.source, md5=args.md5)
    data = get_cifar10_data(args.data)
    for key, value in data.items():
        print(key, value.shape)

    np.random.seed(args.seed)
    # float32 as the seed trained it and as jobs/two_layer.toml does (the README compares
    # the two); TwoLayerNet's own default is the assignment's float64.
    model = TwoLayerNet(hidden_dim=100, reg=1e-2, dtype=np.float32)
    solver = Solver(
        model,
        data,
        update_rule="sgd",
        optim_config={"learning_rate": 1e-3},
        lr_decay=0.95,
        num_epochs=10,
        batch_size=100,
        print_every=100,
    )
    start = time.perf_counter()
    solver.train()
    wall = time.perf_counter() - start
    test_acc = solver.check_accuracy(data["X_test"], data["y_test"])
    print(
        f"best val acc {solver.best_val_acc:.3f}, test acc {test_acc:.3f}, "
        f"{wall:.1f} s ({10 * 49000 / wall:,.0f} samples/s)"
    )


if __name__ == "__main__":
    main()
