"""What a job will hold in memory, estimated before anything is allocated (no Ray at import).

`hidden_dims = [10**9]` or `batch_size = 10**12` pass the job file's checks, but would
start Ray and end in a MemoryError (or the kernel's OOM killer) somewhere in an actor. The
driver refuses them first, in one line: `check_batch` against the training set, then the
driver's share against this machine before Ray starts, and the actors' against the Ray
cluster's memory before any actor starts:

    estimate(job).check_driver(machine_memory())
    estimate(job, eval_rows).check_cluster(*cluster_memory())   # connected to Ray

The counts are deliberately lower bounds (the arrays that certainly exist, not Python's
or Ray's overheads), so a refused job truly cannot run and a borderline one is still tried.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from itertools import pairwise

from distnet import optim
from distnet.config import JobConfig
from distnet.data.reader import assign_rows
from distnet.distributed.plan import actor_batch_sizes
from distnet.errors import DistnetError
from distnet.models.blocks import Affine, Conv, Dropout, Pool, check_blocks, parse_blocks
from distnet.models.build import CIFAR_IMAGE, CONV_KINDS

INPUT_DIM, NUM_CLASSES = 3 * 32 * 32, 10


class OutOfMemory(DistnetError):
    """The job cannot fit in the memory it would run in."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a job holds at least: `params` is one copy of the flat parameters."""

    params: int
    optimizer: int  # the update rule's state (velocity, m and v, ...), over all servers
    servers: int  # every parameter server: params, optimizer state, gradient average
    worker: int  # the largest gradient worker: replica, gradient, activations, batch
    workers: int  # all of them
    object_store: int  # one step's parameters and gradients in flight
    driver: int  # the driver: the initial, best and gathered parameters

    @property
    def cluster(self) -> int:
        """What the actors and the object store need together."""
        return self.servers + self.workers + self.object_store

    def check_driver(self, available: int | None) -> None:
        """Raise OutOfMemory when the driver alone cannot fit in this machine's memory."""
        if available is not None and self.driver > available:
            raise OutOfMemory(
                f"the driver alone needs at least {format_bytes(self.driver)} "
                f"of memory ({self}), more than this machine has "
                f"({format_bytes(available)}); use a smaller model"
            )

    def check_cluster(self, available: int | None, largest_node: int | None) -> None:
        """Raise OutOfMemory when the actors need more than the cluster's `available`
        bytes, or one worker more than its `largest_node` has."""
        if available is not None and self.cluster > available:
            raise OutOfMemory(
                f"the job needs at least {format_bytes(self.cluster)} of memory "
                f"({self}), more than the Ray cluster has "
                f"({format_bytes(available)}); use a smaller model "
                f"or train.batch_size, or fewer workers"
            )
        if largest_node is not None and self.worker > largest_node:
            raise OutOfMemory(
                f"one gradient worker needs at least {format_bytes(self.worker)} "
                f"of memory, more than the largest node of the Ray cluster has "
                f"({format_bytes(largest_node)}); use a smaller "
                f"model or train.batch_size, or more workers"
            )

    def __str__(self) -> str:
        return ", ".join(
            f"{name} {format_bytes(n)}"
            for name, n in (
                ("parameters", self.params),
                ("optimizer state", self.optimizer),
                ("per worker", self.worker),
                ("object store", self.object_store),
            )
        )


def estimate(job: JobConfig, eval_rows: int | None = None) -> MemoryEstimate:
    """The memory `job` needs at least (see the module docstring for what is counted);
    `eval_rows`: the most rows a worker evaluates (its largest share of a split), which
    caps the evaluation batch."""
    m, t = job.model, job.train
    item = 8 if m.dtype == "float64" else 4
    count, per_sample = _conv_counts(m) if m.kind in CONV_KINDS else _fc_counts(m)
    params = count * item
    slots = sum(1 for key in optim.STATE[job.optim.update_rule] if key != "t")
    # The input as pixels and as floats, then what the layers keep for the backward pass.
    per_row = INPUT_DIM * (item + 1) + per_sample * item
    evaluated = t.eval_batch_size if eval_rows is None else min(t.eval_batch_size, eval_rows)
    rows = max(max(actor_batch_sizes(t)), evaluated)
    worker = 2 * params + rows * per_row  # replica and gradient, then the activations
    actors = t.workers + t.backup_workers
    return MemoryEstimate(
        params=params,
        optimizer=slots * params,
        servers=(3 + slots) * params,
        worker=worker,
        workers=actors * worker,
        object_store=(actors + 1) * params,
        driver=3 * params,
    )


def _fc_counts(m) -> tuple[int, int]:
    """(parameters, activation values kept per sample) of a fully connected model: per
    layer the affine output and the ReLU's, batchnorm's normalized input and output,
    dropout's mask and output."""
    dims = [INPUT_DIM, *m.hidden_dims, NUM_CLASSES]
    params = sum(a * b + b for a, b in pairwise(dims))
    if m.kind == "fc" and m.use_batchnorm:
        params += 2 * sum(m.hidden_dims)  # gamma, beta (and as many running statistics)
    per_unit = (
        2
        + (2 if m.kind == "fc" and m.use_batchnorm else 0)
        + (2 if m.kind == "fc" and m.dropout else 0)
    )
    return params, per_unit * sum(m.hidden_dims) + 2 * NUM_CLASSES


def _conv_counts(m) -> tuple[int, int]:
    """(parameters, activation values kept per sample) of a conv model, layer by layer
    from the shapes its blocks meet: a conv keeps its output (fast_layers keeps no im2col
    patch matrix, it copies cache-sized tiles again in backward; a Winograd layer's tiles
    are left out: the count stays a lower bound), a norm its normalized input and output, the
    ReLU its output; a pool its output, dropout its mask and output, an affine block its
    output and the ReLU's."""
    if m.kind == "three_layer_conv":  # as ThreeLayerConvNet builds it
        blocks = [Conv(m.num_filters, m.filter_size), Pool(2, 2), Affine(m.hidden_dims[0])]
    else:
        blocks = parse_blocks(m.blocks)
    shapes = check_blocks(blocks, CIFAR_IMAGE)
    params = values = 0
    for block, before, after in zip(blocks, shapes[:-1], shapes[1:], strict=True):
        out = math.prod(after)
        if isinstance(block, Conv):
            taps = before[0] * block.size**2
            params += block.filters * (taps + 1 + (2 if block.norm else 0))
            values += out * (2 + (2 if block.norm else 0))
        elif isinstance(block, Affine):
            params += (math.prod(before) + 1) * block.units
            values += 2 * out
        else:  # a pool keeps its output, dropout its mask too
            values += out * (2 if isinstance(block, Dropout) else 1)
    params += (math.prod(shapes[-1]) + 1) * NUM_CLASSES
    return params, values + 2 * NUM_CLASSES


def check_batch(job: JobConfig, train_rows: int) -> None:
    """A batch larger than the data it is drawn from would repeat samples within a step:
    refuse it (the global batch against the training set, each worker's share against
    its shard)."""
    t = job.train
    if t.batch_size > train_rows:
        raise DistnetError(
            f"train.batch_size = {t.batch_size} is larger than the training "
            f"set ({train_rows} images)"
        )
    actors = t.workers + t.backup_workers
    for i, batch in enumerate(actor_batch_sizes(t)):
        start, stop = assign_rows(train_rows, i, actors)
        if batch > stop - start:
            raise DistnetError(
                f"worker {i}'s share of train.batch_size = {t.batch_size} is "
                f"{batch} images, more than its {stop - start} training images "
                f"({actors} workers share {train_rows}); use a smaller "
                f"batch_size or fewer workers"
            )


def machine_memory() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def cluster_memory() -> tuple[int | None, int | None]:
    """The connected Ray cluster's memory (heap and object store, bytes): in all, and on
    its largest node (None where Ray does not say)."""
    import ray

    def total(resources: dict) -> int:
        return int(resources.get("memory", 0) + resources.get("object_store_memory", 0))

    nodes = [total(node["Resources"]) for node in ray.nodes() if node["Alive"]]
    return total(ray.cluster_resources()) or None, max(nodes, default=0) or None


def format_bytes(n: float) -> str:
    """1234567 -> "1.2 MB" (decimal units)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
