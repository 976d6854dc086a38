"""The networks the benchmarks train, described once for distnet and for PyTorch.

Every config is an affine-[batchnorm]-relu-[dropout] stack with a softmax loss on
CIFAR-10 (3072 inputs, 10 classes), float32, trained with the seed's update rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

INPUT_DIM, NUM_CLASSES = 3 * 32 * 32, 10


@dataclass(frozen=True)
class BenchConfig:
    name: str
    hidden_dims: tuple[int, ...]
    batch_size: int  # global: split evenly across workers / DDP processes
    update_rule: str  # "sgd" or "adam" (both frameworks have them with the same maths)
    learning_rate: float
    reg: float = 0.0  # L2 on the weights (torch: weight_decay on the weights only)
    use_batchnorm: bool = False
    dropout: float = 0.0
    weight_scale: float = 1e-2  # distnet's initial weights (PyTorch keeps its own init)
    # Timed run length (the first `warmup` of them are discarded); at most one epoch of
    # 2 workers (49,000 / batch steps), so no evaluation falls inside a distnet run.
    steps: int = 200
    quick_steps: int = 60

    def __post_init__(self):
        if self.update_rule not in ("sgd", "adam"):
            raise ValueError(f"{self.name}: update_rule must be sgd or adam, "
                             f"got {self.update_rule!r}")
        if self.steps < 10 or self.quick_steps < 10:
            raise ValueError(f"{self.name}: at least 10 steps, for warm-up and timing")
        if self.steps > self.steps_per_epoch():
            raise ValueError(f"{self.name}: {self.steps} steps exceed one epoch")

    def steps_per_epoch(self, train_rows: int = 49_000, workers: int = 2) -> int:
        return train_rows // workers // -(-self.batch_size // workers)

    @property
    def dims(self) -> list[int]:
        return [INPUT_DIM, *self.hidden_dims, NUM_CLASSES]

    def param_count(self) -> int:
        """Elements of distnet's flat parameter vector (weights, biases, gamma, beta)."""
        dims = self.dims
        count = sum(a * b + b for a, b in pairwise(dims))
        if self.use_batchnorm:
            count += 2 * sum(self.hidden_dims)
        return count

    def bn_count(self) -> int:
        """Elements of the batchnorm running statistics (mean and variance per unit)."""
        return 2 * sum(self.hidden_dims) if self.use_batchnorm else 0

    def flops_per_step(self) -> float:
        """Multiply-adds x 2 of one forward + backward on a global batch (no input grad)."""
        dims = self.dims
        macs = sum(a * b for a, b in pairwise(dims))
        first = dims[0] * dims[1]
        return 2.0 * self.batch_size * (3 * macs - first)

    def steps_for(self, quick: bool) -> int:
        return self.quick_steps if quick else self.steps

    def job_dict(self, *, workers: int, data: str, tmp: str, max_steps: int) -> dict:
        """A distnet job (JobConfig.from_dict input) that trains this net for max_steps."""
        return {
            "name": f"bench-{self.name}-{workers}w", "seed": 0,
            "data": {"path": data},
            "model": {"kind": "fc", "hidden_dims": list(self.hidden_dims),
                      "use_batchnorm": self.use_batchnorm, "dropout": self.dropout,
                      "reg": self.reg, "weight_scale": self.weight_scale, "dtype": "float32"},
            "optim": {"update_rule": self.update_rule, "learning_rate": self.learning_rate},
            # Enough epochs for max_steps (a longer run evaluates at each epoch's end).
            "train": {"num_epochs": -(-max_steps // self.steps_per_epoch(workers=workers)),
                      "batch_size": self.batch_size, "workers": workers,
                      "max_steps": max_steps},
            "checkpoint": {"dir": f"{tmp}/checkpoints"},
            "metrics": {"logdir": f"{tmp}/runs"},
        }


def warmup_steps(steps: int) -> int:
    """Steps discarded before timing: a fifth of the run, at least 5."""
    return max(5, math.ceil(steps / 5))


CONFIGS: dict[str, BenchConfig] = {c.name: c for c in (
    # The seed's TwoLayerNet(hidden_dim=100, reg=1e-2), SGD, batch 100.
    BenchConfig("two_layer", (100,), 100, "sgd", 1e-3, reg=1e-2, weight_scale=1e-3,
                steps=400, quick_steps=100),
    # The seed's five-layer FullyConnectedNet([100]*4), Adam, batch 25 and 256.
    BenchConfig("five_layer_b25", (100, 100, 100, 100), 25, "adam", 1e-3, weight_scale=5e-2,
                steps=400, quick_steps=100),
    BenchConfig("five_layer_b256", (100, 100, 100, 100), 256, "adam", 1e-3, weight_scale=5e-2,
                steps=180, quick_steps=60),
    # jobs/large.toml: 1024-512-256 with batchnorm and dropout, Adam, global batch 512.
    BenchConfig("large", (1024, 512, 256), 512, "adam", 1e-3, use_batchnorm=True,
                dropout=0.3, steps=40, quick_steps=15),
    # The same large net without batchnorm and dropout (plain affine-relu).
    BenchConfig("large_plain", (1024, 512, 256), 512, "adam", 1e-3, steps=40, quick_steps=15),
)}

# The overhead probe: compute is negligible, so a step's time is the framework's.
TINY = BenchConfig("tiny", (10,), 2, "sgd", 1e-5, weight_scale=1e-3, steps=300,
                   quick_steps=100)

DEFAULT_CONFIGS = ("two_layer", "five_layer_b25", "five_layer_b256", "large", "large_plain")
QUICK_CONFIGS = ("two_layer", "large")
