"""The benchmark networks in PyTorch (CPU), single-process and DistributedDataParallel.

Same architecture as distnet's FullyConnectedNet (Linear-[BatchNorm1d]-ReLU-[Dropout]
stacks, cross-entropy on the scores) or ConvNet / ThreeLayerConvNet (the config's blocks,
NCHW images), same float32 arrays, same minibatch sampling (with
replacement, from numpy), same update rule (SGD with the L2 penalty as weight decay on
the weights only, or Adam).

    python -m benchmarks.torch_nets torch --config large --steps 40 --data DATASET --threads 2
    python -m benchmarks.torch_nets ddp   --config large --steps 40 --data DATASET

`ddp` starts 2 processes with 1 thread each, gloo on 127.0.0.1, each computing half of
the global batch on its half of the training set (as distnet's two workers do).
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import time
from itertools import pairwise

import numpy as np

from benchmarks.harness import child
from benchmarks.harness.configs import IMAGE, NUM_CLASSES, BenchConfig
from benchmarks.harness.machine import blas_info

DDP_PROCESSES = 2


def build_net(config: BenchConfig):
    if config.is_conv:
        return build_conv_net(config)
    from torch import nn

    layers: list = []
    dims = config.dims
    for fan_in, fan_out in pairwise(dims[:-1]):
        layers.append(nn.Linear(fan_in, fan_out))
        if config.use_batchnorm:
            layers.append(nn.BatchNorm1d(fan_out, eps=1e-5, momentum=0.1))
        layers.append(nn.ReLU())
        if config.dropout:
            layers.append(nn.Dropout(config.dropout))
    layers.append(nn.Linear(dims[-2], dims[-1]))
    return nn.Sequential(*layers)


def build_conv_net(config: BenchConfig):
    """distnet's ConvNet blocks in torch: Conv2d-[BatchNorm2d | GroupNorm]-ReLU, MaxPool2d,
    Dropout, Linear-ReLU after a Flatten, and the scores' Linear."""
    from torch import nn

    from distnet.models.blocks import Conv, Dropout, Pool, check_blocks, parse_blocks

    blocks = parse_blocks(config.blocks)
    shapes = check_blocks(blocks, IMAGE)
    layers: list = []
    for block, before in zip(blocks, shapes[:-1], strict=True):
        if isinstance(block, Conv):
            layers.append(nn.Conv2d(before[0], block.filters, block.size, block.stride, block.pad))
            if block.norm == "batchnorm":
                layers.append(nn.BatchNorm2d(block.filters, eps=1e-5, momentum=0.1))
            elif block.norm == "groupnorm":
                layers.append(nn.GroupNorm(block.groups, block.filters, eps=1e-5))
            layers.append(nn.ReLU())
        elif isinstance(block, Pool):
            layers.append(nn.MaxPool2d(block.size, block.stride))
        elif isinstance(block, Dropout):
            layers.append(nn.Dropout(block.p))
        else:  # Affine: affine - relu
            if len(before) == 3:
                layers.append(nn.Flatten())
            layers += [nn.Linear(math.prod(before), block.units), nn.ReLU()]
    if len(shapes[-1]) == 3:
        layers.append(nn.Flatten())
    layers.append(nn.Linear(math.prod(shapes[-1]), NUM_CLASSES))
    return nn.Sequential(*layers)


def build_optimizer(config: BenchConfig, net):
    import torch

    if config.update_rule == "adam":
        return torch.optim.Adam(net.parameters(), lr=config.learning_rate, eps=1e-8)
    # distnet's reg adds 0.5 * reg * |W|^2 for weight matrices only: their gradient
    # gains reg * W, which is SGD's weight_decay on exactly those tensors.
    weights = [p for p in net.parameters() if p.dim() >= 2]
    others = [p for p in net.parameters() if p.dim() < 2]
    return torch.optim.SGD(
        [{"params": weights, "weight_decay": config.reg}, {"params": others, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )


def make_step(config: BenchConfig, net, X: np.ndarray, y: np.ndarray, batch: int, seed: int):
    """One training step on a random minibatch of `batch` rows of (X, y)."""
    import torch
    import torch.nn.functional as F

    optimizer = build_optimizer(config, net)
    rng = np.random.default_rng(seed)
    net.train()

    def step(_: int) -> float:
        idx = rng.integers(len(X), size=batch)
        xb, yb = torch.from_numpy(X[idx]), torch.from_numpy(y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(xb), yb)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def run_single(config_name: str, steps: int, data: str, threads: int) -> child.ChildResult:
    import torch

    start = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = child.config_named(config_name)
    X, y = child.train_arrays(data, config)
    step = make_step(config, build_net(config), X, y, config.batch_size, seed=0)
    setup = time.perf_counter() - start
    times, cpu = child.timed_steps(step, steps)
    info = blas_info() + [
        {"user_api": "torch", "num_threads": torch.get_num_threads(), "version": torch.__version__}
    ]
    return child.ChildResult(
        "torch", config_name, times, threads, info, [child.peak_rss_mb()], setup, cpu
    )


def _ddp_rank(rank: int, config_name: str, steps: int, data: str, port: int, out: str):
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    torch.manual_seed(0)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=DDP_PROCESSES
    )
    config = child.config_named(config_name)
    X, y = child.train_arrays(data, config, rank, DDP_PROCESSES)
    net = DistributedDataParallel(build_net(config))
    batch = child.worker_batch(config.batch_size, rank, DDP_PROCESSES)
    step = make_step(config, net, X, y, batch, seed=rank)
    dist.barrier()
    times, cpu = child.timed_steps(step, steps)
    report = {
        "step_s": times,
        "cpu": cpu,
        "rss": child.peak_rss_mb(),
        "blas": blas_info(),
        "threads": torch.get_num_threads(),
    }
    dist.barrier()
    dist.destroy_process_group()
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(report, f)


def run_ddp(config_name: str, steps: int, data: str) -> child.ChildResult:
    import torch.multiprocessing as mp

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(
            _ddp_rank,
            args=(config_name, steps, data, _free_port(), out),
            nprocs=DDP_PROCESSES,
            join=True,
        )
        ranks = []
        for rank in range(DDP_PROCESSES):
            with open(f"{out}/rank{rank}.json") as f:
                ranks.append(json.load(f))
    # A step ends when the slower process's all-reduce has finished; both see it.
    times = [max(per_rank) for per_rank in zip(*(r["step_s"] for r in ranks), strict=True)]
    return child.ChildResult(
        "ddp",
        config_name,
        times,
        ranks[0]["threads"],
        ranks[0]["blas"],
        [r["rss"] for r in ranks],
        cpu_per_step_s=sum(r["cpu"] for r in ranks),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    args = child.parse_args(__doc__, ("torch", "ddp"))
    if args.system == "torch":
        child.emit(run_single(args.config, args.steps, args.data, args.threads))
    else:
        child.emit(run_ddp(args.config, args.steps, args.data))


if __name__ == "__main__":
    main()
