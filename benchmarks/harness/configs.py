"""The networks the benchmarks train, described once for distnet and for PyTorch.

A config is an affine-[batchnorm]-relu-[dropout] stack (kind "fc", on 3072 inputs) or a
conv net on 3x32x32 images whose layers are ConvNet blocks as a job file writes them
(kind "conv"; kind "three_layer_conv" is the assignment's ThreeLayerConvNet, whose layers
the blocks spell out for PyTorch and for the counts), with a softmax loss on CIFAR-10's
10 classes, float32, trained with the seed's update rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

INPUT_DIM, NUM_CLASSES = 3 * 32 * 32, 10
IMAGE = (3, 32, 32)
KINDS = ("fc", "conv", "three_layer_conv")


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
    kind: str = "fc"
    blocks: tuple[dict, ...] = ()  # conv kinds: the layers, as [[model.blocks]] tables

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if (self.kind == "fc") == bool(self.blocks):
            raise ValueError(f"{self.name}: blocks describe the conv kinds, and only them")
        if self.update_rule not in ("sgd", "adam"):
            raise ValueError(
                f"{self.name}: update_rule must be sgd or adam, got {self.update_rule!r}"
            )
        if self.steps < 10 or self.quick_steps < 10:
            raise ValueError(f"{self.name}: at least 10 steps, for warm-up and timing")
        if self.steps > self.steps_per_epoch():
            raise ValueError(f"{self.name}: {self.steps} steps exceed one epoch")

    def steps_per_epoch(self, train_rows: int = 49_000, workers: int = 2) -> int:
        return train_rows // workers // -(-self.batch_size // workers)

    @property
    def is_conv(self) -> bool:
        return self.kind != "fc"

    @property
    def dims(self) -> list[int]:
        return [INPUT_DIM, *self.hidden_dims, NUM_CLASSES]

    def layers(self) -> list[tuple[str, int, int, int]]:
        """(type, parameters, multiply-adds per sample, batchnorm channels) of each layer
        with weights, in order, the class scores' affine layer last."""
        if not self.is_conv:
            found = []
            for i, (fan_in, units) in enumerate(pairwise(self.dims)):
                bn = units if self.use_batchnorm and i < len(self.hidden_dims) else 0
                found.append(("affine", (fan_in + 1) * units + 2 * bn, fan_in * units, bn))
            return found
        from distnet.models import blocks as conv_blocks

        parsed = conv_blocks.parse_blocks(self.blocks)
        shapes = conv_blocks.check_blocks(parsed, IMAGE)
        found = []
        for block, before, after in zip(parsed, shapes[:-1], shapes[1:], strict=True):
            if isinstance(block, conv_blocks.Conv):
                weights = block.filters * before[0] * block.size**2
                norm = 2 * block.filters if block.norm else 0
                bn = block.filters if block.norm == "batchnorm" else 0
                found.append(
                    ("conv", weights + block.filters + norm, weights * after[1] * after[2], bn)
                )
            elif isinstance(block, conv_blocks.Affine):
                fan_in = math.prod(before)
                found.append(("affine", (fan_in + 1) * block.units, fan_in * block.units, 0))
        fan_in = math.prod(shapes[-1])
        return [*found, ("affine", (fan_in + 1) * NUM_CLASSES, fan_in * NUM_CLASSES, 0)]

    def param_count(self) -> int:
        """Elements of distnet's flat parameter vector (weights, biases, gamma, beta)."""
        return sum(params for _, params, _, _ in self.layers())

    def bn_count(self) -> int:
        """Elements of the batchnorm running statistics (mean and variance per unit)."""
        return 2 * sum(bn for _, _, _, bn in self.layers())

    def flops_per_step(self) -> float:
        """Multiply-adds x 2 of one forward + backward on a global batch (no input grad
        for the first layer)."""
        macs = [m for _, _, m, _ in self.layers()]
        return 2.0 * self.batch_size * (3 * sum(macs) - macs[0])

    def model_table(self) -> dict:
        """The job file's [model] table for this net (float32)."""
        common = {"reg": self.reg, "dtype": "float32"}
        if self.kind == "fc":
            return {
                "kind": "fc",
                "hidden_dims": list(self.hidden_dims),
                "use_batchnorm": self.use_batchnorm,
                "dropout": self.dropout,
                "weight_scale": self.weight_scale,
                **common,
            }
        if self.kind == "conv":
            return {
                "kind": "conv",
                "blocks": [dict(b) for b in self.blocks],
                "weight_init": "he",
                **common,
            }
        conv, _, affine = self.blocks  # conv - pool - affine, as ThreeLayerConvNet
        return {
            "kind": "three_layer_conv",
            "num_filters": conv["filters"],
            "filter_size": conv["size"],
            "hidden_dims": [affine["units"]],
            "weight_scale": self.weight_scale,
            **common,
        }

    def steps_for(self, quick: bool) -> int:
        return self.quick_steps if quick else self.steps

    def job_dict(
        self, *, workers: int, data: str, tmp: str, max_steps: int, update: str = "sync"
    ) -> dict:
        """A distnet job (JobConfig.from_dict input) that trains this net for max_steps
        (`update`: train.update, "sync" or "overlapped")."""
        return {
            "name": f"bench-{self.name}-{workers}w",
            "seed": 0,
            "data": {"path": data},
            "model": self.model_table(),
            "optim": {"update_rule": self.update_rule, "learning_rate": self.learning_rate},
            # Enough epochs for max_steps (a longer run evaluates at each epoch's end).
            "train": {
                "num_epochs": -(-max_steps // self.steps_per_epoch(workers=workers)),
                "batch_size": self.batch_size,
                "workers": workers,
                "max_steps": max_steps,
                "update": update,
            },
            "checkpoint": {"dir": f"{tmp}/checkpoints"},
            "metrics": {"logdir": f"{tmp}/runs"},
        }


def warmup_steps(steps: int) -> int:
    """Steps discarded before timing: a fifth of the run, at least 5."""
    return max(5, math.ceil(steps / 5))


CONFIGS: dict[str, BenchConfig] = {
    c.name: c
    for c in (
        # The seed's TwoLayerNet(hidden_dim=100, reg=1e-2), SGD, batch 100.
        BenchConfig(
            "two_layer",
            (100,),
            100,
            "sgd",
            1e-3,
            reg=1e-2,
            weight_scale=1e-3,
            steps=400,
            quick_steps=100,
        ),
        # The seed's five-layer FullyConnectedNet([100]*4), Adam, batch 25 and 256.
        BenchConfig(
            "five_layer_b25",
            (100, 100, 100, 100),
            25,
            "adam",
            1e-3,
            weight_scale=5e-2,
            steps=400,
            quick_steps=100,
        ),
        BenchConfig(
            "five_layer_b256",
            (100, 100, 100, 100),
            256,
            "adam",
            1e-3,
            weight_scale=5e-2,
            steps=180,
            quick_steps=60,
        ),
        # jobs/large.toml: 1024-512-256 with batchnorm and dropout, Adam, global batch 512.
        BenchConfig(
            "large",
            (1024, 512, 256),
            512,
            "adam",
            1e-3,
            use_batchnorm=True,
            dropout=0.3,
            steps=40,
            quick_steps=15,
        ),
        # The same large net without batchnorm and dropout (plain affine-relu).
        BenchConfig("large_plain", (1024, 512, 256), 512, "adam", 1e-3, steps=40, quick_steps=15),
        # jobs/three_layer_convnet.toml: the assignment's ThreeLayerConvNet (conv 32 7x7 - relu -
        # pool - affine 500 - relu - affine), Adam, batch 50 as its notebook trains it (reg 0:
        # PyTorch's Adam has no L2 penalty of distnet's kind; it costs one pass either way).
        BenchConfig(
            "three_layer_conv",
            (500,),
            50,
            "adam",
            1e-3,
            weight_scale=1e-3,
            steps=100,
            quick_steps=30,
            kind="three_layer_conv",
            blocks=(
                {"type": "conv", "filters": 32, "size": 7},
                {"type": "pool"},
                {"type": "affine", "units": 500},
            ),
        ),
        # jobs/cifar10_convnet_best.toml's net: conv 3x3 32-64-128, each with batchnorm, relu
        # and a 2x2 pool, then the scores; batch 128. (The recipe's AdamW costs what Adam does.)
        BenchConfig(
            "recipe_conv",
            (),
            128,
            "adam",
            3e-3,
            steps=60,
            quick_steps=20,
            kind="conv",
            blocks=tuple(
                b
                for filters in (32, 64, 128)
                for b in (
                    {"type": "conv", "filters": filters, "norm": "batchnorm"},
                    {"type": "pool"},
                )
            ),
        ),
    )
}

# The overhead probe: compute is negligible, so a step's time is the framework's.
TINY = BenchConfig("tiny", (10,), 2, "sgd", 1e-5, weight_scale=1e-3, steps=300, quick_steps=100)

DEFAULT_CONFIGS = ("two_layer", "five_layer_b25", "five_layer_b256", "large", "large_plain")
CONV_CONFIGS = ("three_layer_conv", "recipe_conv")
QUICK_CONFIGS = ("two_layer", "large")
