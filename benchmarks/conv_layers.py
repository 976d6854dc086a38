"""Convolution and max-pool layers: distnet.fast_layers against the naive layers and
against PyTorch CPU, one thread each, in one process, measured side by side.

    /tmp/torchenv/bin/python -m benchmarks.conv_layers [--repeats 21] [--batch 50] [--write]
        [--baseline REV]  # also time fast_layers as of git revision REV, in the same run

Part 1 is the assignment notebook's timing cells (float64, as the notebook's randn
arrays are): conv x (100, 3, 31, 31), w (25, 3, 3, 3), stride 2, pad 1; max pool x
(100, 3, 32, 32), 2x2 stride 2; fast vs naive, printed as the notebook prints them.
Part 2 is float32 forward + backward (dx included on both sides, and without it for the
first layers) of every conv and pool layer shape of ThreeLayerConvNet and of a small
VGG-style net (3->32->32, pool, ->64->64, pool, ->128, pool; 3x3 pad 1), with GFLOP/s
beside numpy's and PyTorch's sgemm. Speed vs PyTorch = PyTorch's time / distnet's.
Part 3 is a training step of ThreeLayerConvNet: the Solver against the same net in
PyTorch. Each repeat visits every layer and system (the order of the two alternates);
figures are medians over repeats, of wall time and of this process's CPU time.
`--write` appends the raw times to conv_layers_results.jsonl (JSON Lines, a run header
and one line per measurement, as benchmarks/harness/results.py writes them).
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.harness.machine import THREAD_VARS, clean_blas_env, describe
from benchmarks.harness.results import append_run
from distnet import fast_layers, im2col
from distnet.gradcheck import rel_error
from distnet.layers import conv as naive

RESULTS = Path(__file__).with_name("conv_layers_results.jsonl")
SGEMM_SIZE = 1024
POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}
SYSTEMS = ("distnet", "torch")
TABLE_HEADER = (
    "| layer | net | distnet fwd / bwd ms | PyTorch fwd / bwd ms | speed vs PyTorch "
    "(fwd+bwd) | by CPU time | least disturbed (p10) | distnet GFLOP/s | "
    "PyTorch GFLOP/s | distnet's products alone, GFLOP/s | max grad diff |"
)
COLUMNS = TABLE_HEADER.count("|") - 1


@dataclass(frozen=True)
class Layer:
    """One layer shape: a stride-1 'same' convolution, or a 2x2 stride-2 max pool."""

    name: str
    nets: str
    channels: int
    size: int  # the input is size x size
    filters: int = 0
    kernel: int = 0  # 0: the max pool
    input_grad: bool = True  # False: a network's first layer, whose dx nobody needs

    def flops(self, batch: int) -> float:
        """Forward + backward: three products (out, dw, dx) of 2 * N*F*C*k*k*H*W flops
        each, or two without dx."""
        products = 3 if self.input_grad else 2
        return 2.0 * products * batch * self.filters * self.channels * self.kernel**2 * self.size**2


THREE, VGG = "ThreeLayerConvNet", "VGG-style"
LAYERS = [
    Layer("conv 7x7 3->32 @32x32", THREE, 3, 32, 32, 7),
    Layer("conv 7x7 3->32 @32x32, no dx", THREE, 3, 32, 32, 7, input_grad=False),
    Layer("pool 2x2, 32 @32x32", f"{THREE}, {VGG}", 32, 32),
    Layer("conv 3x3 3->32 @32x32", VGG, 3, 32, 32, 3),
    Layer("conv 3x3 3->32 @32x32, no dx", VGG, 3, 32, 32, 3, input_grad=False),
    Layer("conv 3x3 32->32 @32x32", VGG, 32, 32, 32, 3),
    Layer("conv 3x3 32->64 @16x16", VGG, 32, 16, 64, 3),
    Layer("conv 3x3 64->64 @16x16", VGG, 64, 16, 64, 3),
    Layer("pool 2x2, 64 @16x16", VGG, 64, 16),
    Layer("conv 3x3 64->128 @8x8", VGG, 64, 8, 128, 3),
    Layer("pool 2x2, 128 @8x8", VGG, 128, 8),
]


def one_thread_env() -> None:
    """Re-execute with every BLAS and OpenMP pool at one thread (read when they load)."""
    if any(os.environ.get(name) != "1" for name in THREAD_VARS):
        env = {**os.environ, **dict.fromkeys(THREAD_VARS, "1")}
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def timed(fn) -> tuple[float, float]:
    """Wall time and this process's CPU time of one call (both libraries run in this
    process with one thread; CPU time leaves out the time another tenant had the core)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def numpy_pair(forward_fn, backward_fn, inputs, dout):
    """(forward, backward) closures: forward keeps its cache, backward returns gradients."""
    state = {}

    def forward():
        state["cache"] = forward_fn(*inputs)[1]

    def backward():
        grads = backward_fn(dout, state["cache"])
        return grads if isinstance(grads, tuple) else (grads,)

    return forward, backward


def layer_pairs(layer: Layer, batch: int, rng, baseline=None) -> dict:
    """distnet's and PyTorch's (forward, backward) on the same float32 arrays, and those of
    a `baseline` fast_layers module if given. PyTorch's backward is autograd.grad (nothing
    accumulates into .grad) and computes dx too."""
    import torch
    import torch.nn.functional as F

    x = rng.standard_normal((batch, layer.channels, layer.size, layer.size), dtype=np.float32)
    xt = torch.from_numpy(x).requires_grad_(layer.input_grad)
    state = {}
    if layer.kernel:
        w = rng.standard_normal(
            (layer.filters, layer.channels, layer.kernel, layer.kernel), dtype=np.float32
        ) * np.float32(0.1)
        b = rng.standard_normal(layer.filters, dtype=np.float32)
        dout = rng.standard_normal((batch, layer.filters, layer.size, layer.size), dtype=np.float32)
        conv_param = {"stride": 1, "pad": layer.kernel // 2}

        def ours(fast):
            return numpy_pair(
                lambda *a: fast.conv_forward_fast(*a, conv_param),
                functools.partial(fast.conv_backward_fast, input_grad=layer.input_grad),
                (x, w, b),
                dout,
            )

        wt, bt = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()
        conv_inputs = (xt, wt, bt)
        inputs = conv_inputs if layer.input_grad else (wt, bt)

        def torch_forward():
            state["out"] = F.conv2d(*conv_inputs, stride=1, padding=layer.kernel // 2)
    else:
        dout = rng.standard_normal(
            (batch, layer.channels, layer.size // 2, layer.size // 2), dtype=np.float32
        )

        def ours(fast):
            return numpy_pair(
                lambda a: fast.max_pool_forward_fast(a, POOL),
                fast.max_pool_backward_fast,
                (x,),
                dout,
            )

        inputs = (xt,)

        def torch_forward():
            state["out"] = F.max_pool2d(xt, 2, 2)

    def torch_backward():
        return torch.autograd.grad(state["out"], inputs, torch.from_numpy(dout))

    pairs = {"distnet": ours(fast_layers), "torch": (torch_forward, torch_backward)}
    if baseline is not None:
        pairs["baseline"] = ours(baseline)
    if layer.kernel:
        pairs["products"] = products_alone(layer, x, w, b, dout, conv_param)
    return pairs


def products_alone(layer: Layer, x, w, b, dout, conv_param):
    """Only the matrix products of conv_forward_fast / conv_backward_fast, on operands
    made beforehand: the speed im2col leaves to reach with this BLAS. (All these layers
    are stride 1 with pad < filter size.) The patches are whole matrices here, as pixel
    rows' tiles (im2col.patch_tiles) are made during the products."""
    (F, C, k, _), pad = w.shape, conv_param["pad"]
    if fast_layers.uses_winograd(C, F, k, k, 1, *dout.shape[2:]):
        return winograd_products(layer, fast_layers.conv_forward_fast(x, w, b, conv_param)[1][4], F)
    patches = im2col.patch_matrix(x, k, k, 1, pad, pad)
    dout_rows = np.ascontiguousarray(dout.transpose(0, 2, 3, 1)).reshape(-1, F)
    if not im2col.channels_last(C, k):  # columns (taps, pixels); dx's columns for col2im
        w_rows = w.reshape(F, -1)
        dout_cf = np.ascontiguousarray(dout.transpose(1, 0, 2, 3)).reshape(F, -1)
        products = (
            (lambda: w_rows @ patches),
            (lambda: patches @ dout_rows),
            (lambda: w_rows.T @ dout_cf),
        )
    elif F < 2 * C:  # rows (pixels, taps); dx as the product of dout's rows
        w_rows = im2col.filter_rows(w)
        drows = im2col.patch_matrix(dout, k, k, 1, k - 1 - pad, k - 1 - pad)
        flipped_rows = im2col.filter_rows(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
        products = (
            (lambda: patches @ w_rows),
            (lambda: patches.T @ dout_rows),
            (lambda: drows @ flipped_rows),
        )
    else:  # rows; dx's rows for col2im
        w_rows = im2col.filter_rows(w)
        products = (
            (lambda: patches @ w_rows),
            (lambda: patches.T @ dout_rows),
            (lambda: dout_rows @ w_rows.T),
        )
    forward, dw, dx = products

    def backward():
        return (dw(), dx()) if layer.input_grad else (dw(),)

    return forward, backward


def agreement(pairs: dict) -> float:
    """Largest difference between distnet's and PyTorch's gradients, relative to the
    largest PyTorch gradient of the same array (float32 sums in another order)."""
    grads = {}
    for system in SYSTEMS:
        forward, backward = pairs[system]
        forward()
        grads[system] = [np.asarray(g) for g in backward()]
    for forward, backward in pairs.values():  # warm-up for the others
        forward()
        backward()
    ours = [g for g in grads["distnet"] if g.ndim]  # dx is None without input_grad
    return max(
        float(np.abs(a - b).max() / np.abs(b).max())
        for a, b in zip(ours, grads["torch"], strict=True)
    )


def interleaved(setups: dict, repeats: int, extra: dict) -> dict:
    """times[(name, system, phase)]: one (wall, CPU) time per repeat; `extra` are other
    timed calls, made at the start of each repeat."""
    times: dict = {key: [] for key in extra}
    for repeat in range(repeats):
        for key, fn in extra.items():
            times[key].append(timed(fn))
        for k, (name, pairs) in enumerate(setups.items()):
            systems = list(pairs)
            if (repeat + k) % 2:
                systems.reverse()
            for system in systems:
                forward, backward = pairs[system]
                times.setdefault((name, system, "forward"), []).append(timed(forward))
                times.setdefault((name, system, "backward"), []).append(timed(backward))
    return times


# The modules a baseline is taken from at its revision (fast_layers and its kernels);
# anything else it imports (distnet.layers, ...) resolves to the working tree.
BASELINE_MODULES = ("distnet/im2col.py", "distnet/winograd.py", "distnet/fast_layers.py")


def baseline_module(revision: str):
    """distnet/fast_layers.py as of a git revision, over im2col.py and winograd.py of the
    same revision, loaded beside the current ones, to time a change against its
    predecessor in one run."""
    saved = {name: sys.modules.get(name) for name in ("distnet.im2col", "distnet.winograd")}
    try:
        for path in BASELINE_MODULES:
            source = subprocess.run(
                ["git", "show", f"{revision}:{path}"],
                cwd=Path(__file__).parents[1],
                capture_output=True,
                text=True,
            )
            if source.returncode:
                sys.exit(f"conv_layers: --baseline {revision}: {source.stderr.strip()}")
            module = types.ModuleType(f"{Path(path).stem}@{revision}")
            exec(compile(source.stdout, f"{revision}:{path}", "exec"), module.__dict__)
            # the next module's `from distnet.im2col import ...` takes this revision's
            sys.modules[path.removesuffix(".py").replace("/", ".")] = module
        return module
    finally:
        for name, current in saved.items():
            sys.modules[name] = current


def winograd_products(layer: Layer, tiles, F: int):
    """The three batched products of a Winograd layer: tiles (t, P, C) @ U (t, C, F),
    tiles^T @ dM (t, P, F) for dw, dM @ U^T for dx."""
    U = np.ones((tiles.shape[0], tiles.shape[2], F), tiles.dtype)
    dM = np.ones(tiles.shape[:2] + (F,), tiles.dtype)

    def backward():
        dw = np.matmul(tiles.transpose(0, 2, 1), dM)
        return (dw, np.matmul(dM, U.transpose(0, 2, 1))) if layer.input_grad else (dw,)

    return (lambda: np.matmul(tiles, U)), backward


def bench_layers(
    batch: int, repeats: int, only: str, baseline: str = "", old=None
) -> tuple[list[dict], list[str]]:
    """`old`: the fast_layers module of revision `baseline`, timed beside the current one."""
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    layers = [layer for layer in LAYERS if only in layer.name]
    setups = {layer.name: layer_pairs(layer, batch, rng, old) for layer in layers}
    diffs = {name: agreement(pairs) for name, pairs in setups.items()}  # also the warm-up
    a = rng.standard_normal((SGEMM_SIZE, SGEMM_SIZE), dtype=np.float32)
    a_t = torch.from_numpy(a)
    times = interleaved(
        setups, repeats, {"sgemm numpy": lambda: a @ a, "sgemm torch": lambda: a_t @ a_t}
    )
    sgemm_flops = 2.0 * SGEMM_SIZE**3
    gflops = {
        key: sgemm_flops / np.median(wall(times[key])) / 1e9
        for key in ("sgemm numpy", "sgemm torch")
    }
    records = [
        {"part": "sgemm", "system": key.split()[1], "size": SGEMM_SIZE, **record_times(times[key])}
        for key in gflops
    ]
    summary = (
        f"Batch {batch}, float32, 1 thread each (torch.get_num_threads() = "
        f"{torch.get_num_threads()}), medians of {repeats} interleaved repeats. sgemm "
        f"{SGEMM_SIZE}^3: numpy (OpenBLAS) {gflops['sgemm numpy']:.0f} GFLOP/s, PyTorch "
        f"(MKL) {gflops['sgemm torch']:.0f} GFLOP/s."
    )
    lines = [summary, "", TABLE_HEADER, "|---" * COLUMNS + "|"]
    for layer in layers:
        wall_s, cpu_s, cells = {}, {}, []
        for system in SYSTEMS:
            fwd, bwd = (times[layer.name, system, phase] for phase in ("forward", "backward"))
            wall_s[system], cpu_s[system] = wall(fwd) + wall(bwd), cpu(fwd) + cpu(bwd)
            cells.append(f"{1e3 * np.median(wall(fwd)):.2f} / {1e3 * np.median(wall(bwd)):.2f}")
            records += [
                {
                    "part": "layers",
                    "layer": layer.name,
                    "nets": layer.nets,
                    "batch": batch,
                    "system": system,
                    "phase": phase,
                    "flops": layer.flops(batch),
                    **record_times(times[layer.name, system, phase]),
                }
                for phase in ("forward", "backward")
            ]
        med = {s: float(np.median(t)) for s, t in wall_s.items()}
        med_cpu = {s: float(np.median(t)) for s, t in cpu_s.items()}
        p10 = {s: float(np.percentile(t, 10)) for s, t in wall_s.items()}
        if layer.kernel:
            products_s = wall(times[layer.name, "products", "forward"]) + wall(
                times[layer.name, "products", "backward"]
            )
            records += [
                {
                    "part": "layers",
                    "layer": layer.name,
                    "batch": batch,
                    "system": "products",
                    "phase": phase,
                    "flops": layer.flops(batch),
                    **record_times(times[layer.name, "products", phase]),
                }
                for phase in ("forward", "backward")
            ]
            med["products"] = float(np.median(products_s))
        rates = [
            f"{layer.flops(batch) / med[s] / 1e9:.0f}" if layer.kernel else "—"
            for s in (*SYSTEMS, "products")
        ]
        lines.append(
            f"| {layer.name} | {layer.nets} | {cells[0]} | {cells[1]} | "
            f"{med['torch'] / med['distnet']:.2f} | "
            f"{med_cpu['torch'] / med_cpu['distnet']:.2f} | "
            f"{p10['torch'] / p10['distnet']:.2f} | "
            f"{' | '.join(rates)} | {diffs[layer.name]:.1e} |"
        )
    if baseline:
        lines += [
            "",
            f"fast_layers at {baseline} (baseline) against the working tree's, by CPU "
            "time (PyTorch's time / theirs, fwd+bwd medians):",
            "",
        ]
        for layer in layers:
            cpu_s = {
                s: np.median(
                    cpu(times[layer.name, s, "forward"]) + cpu(times[layer.name, s, "backward"])
                )
                for s in ("baseline", *SYSTEMS)
            }
            records += [
                {
                    "part": "layers",
                    "layer": layer.name,
                    "batch": batch,
                    "system": "baseline",
                    "revision": baseline,
                    "phase": phase,
                    **record_times(times[layer.name, "baseline", phase]),
                }
                for phase in ("forward", "backward")
            ]
            lines.append(
                f"- {layer.name}: baseline {cpu_s['torch'] / cpu_s['baseline']:.2f}, "
                f"distnet {cpu_s['torch'] / cpu_s['distnet']:.2f} "
                f"({1e3 * cpu_s['baseline']:.1f} -> {1e3 * cpu_s['distnet']:.1f} ms)"
            )
    return records, lines


def wall(pairs) -> np.ndarray:
    return np.array([w for w, _ in pairs])


def cpu(pairs) -> np.ndarray:
    return np.array([c for _, c in pairs])


def record_times(pairs) -> dict:
    return {
        "wall_s": [round(float(t), 7) for t in wall(pairs)],
        "cpu_s": [round(float(t), 7) for t in cpu(pairs)],
    }


def notebook_cells(repeats: int) -> tuple[list[dict], list[str]]:
    """The notebook's timing cells: naive against fast, interleaved, float64."""
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s) for s in ((100, 3, 31, 31), (25, 3, 3, 3), (25,)))
    dout = rng.standard_normal((100, 25, 16, 16))
    conv_param = {"stride": 2, "pad": 1}
    px, pdout = rng.standard_normal((100, 3, 32, 32)), rng.standard_normal((100, 3, 16, 16))
    setups = {
        "conv": {
            "naive": numpy_pair(
                lambda *a: naive.conv_forward_naive(*a, conv_param),
                naive.conv_backward_naive,
                (x, w, b),
                dout,
            ),
            "fast": numpy_pair(
                lambda *a: fast_layers.conv_forward_fast(*a, conv_param),
                fast_layers.conv_backward_fast,
                (x, w, b),
                dout,
            ),
        },
        "pool": {
            "naive": numpy_pair(
                lambda a: naive.max_pool_forward_naive(a, POOL),
                naive.max_pool_backward_naive,
                (px,),
                pdout,
            ),
            "fast": numpy_pair(
                lambda a: fast_layers.max_pool_forward_fast(a, POOL),
                fast_layers.max_pool_backward_fast,
                (px,),
                pdout,
            ),
        },
    }
    differences = {}
    for name, pairs in setups.items():
        grads = {}
        for system, (forward, backward) in pairs.items():
            forward()
            grads[system] = backward()
        differences[name] = [
            rel_error(a, b) for a, b in zip(grads["naive"], grads["fast"], strict=True)
        ]
    times = interleaved(setups, repeats, {})
    lines, records = [], []
    for name in setups:
        for phase in ("forward", "backward"):
            naive_s, fast_s = (
                float(np.median(wall(times[name, s, phase]))) for s in ("naive", "fast")
            )
            lines += [
                f"Testing {name}_{phase}_fast:",
                f"Naive: {naive_s:f}s",
                f"Fast: {fast_s:f}s",
                f"Speedup: {naive_s / fast_s:f}x",
            ]
            if phase == "backward":
                lines.append(
                    "Difference (each gradient): "
                    + ", ".join(f"{d:.2e}" for d in differences[name])
                )
            lines.append("")
            records += [
                {
                    "part": "notebook",
                    "layer": name,
                    "system": s,
                    "phase": phase,
                    **record_times(times[name, s, phase]),
                }
                for s in ("naive", "fast")
            ]
    return records, lines


# The notebook's training cell: ThreeLayerConvNet(weight_scale=0.001, hidden_dim=500,
# reg=0.001), Adam 1e-3, batch 50.
SOLVER_NET = {"weight_scale": 1e-3, "hidden_dim": 500, "reg": 1e-3}
SOLVER_TRAIN_ROWS = 1000


def solver_steps(batch: int, seed: int = 0) -> dict:
    """One training step each: distnet's Solver._step on ThreeLayerConvNet, and the same
    net in PyTorch (conv 7x7 pad 3 - ReLU - 2x2 max pool - Linear - ReLU - Linear, cross
    entropy, Adam with reg as weight decay on the weights only), on the same random
    float32 images, minibatches drawn with replacement as the Solver draws them."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from distnet.models import ThreeLayerConvNet
    from distnet.solver import Solver

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((SOLVER_TRAIN_ROWS, 3, 32, 32), dtype=np.float32)
    y = rng.integers(10, size=SOLVER_TRAIN_ROWS)
    model = ThreeLayerConvNet(**SOLVER_NET, init_seed=seed)
    solver = Solver(
        model,
        {"X_train": X, "y_train": y, "X_val": X[:1], "y_val": y[:1]},
        update_rule="adam",
        optim_config={"learning_rate": 1e-3},
        batch_size=batch,
        verbose=False,
        seed=seed,
    )
    counter = iter(range(1, 10**9))

    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 32, 7, padding=3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 16 * 16, SOLVER_NET["hidden_dim"]),
        nn.ReLU(),
        nn.Linear(SOLVER_NET["hidden_dim"], 10),
    )
    weights = [p for p in net.parameters() if p.dim() > 1]
    others = [p for p in net.parameters() if p.dim() == 1]
    optimizer = torch.optim.Adam(
        [
            {"params": weights, "weight_decay": SOLVER_NET["reg"]},
            {"params": others, "weight_decay": 0.0},
        ],
        lr=1e-3,
        eps=1e-8,
    )
    torch_rng = np.random.default_rng(seed)

    def torch_step():
        idx = torch_rng.integers(len(X), size=batch)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(torch.from_numpy(X[idx])), torch.from_numpy(y[idx]))
        loss.backward()
        optimizer.step()

    return {"distnet": lambda: solver._step(next(counter)), "torch": torch_step}


def bench_solver(batch: int, steps: int) -> tuple[list[dict], list[str]]:
    step = solver_steps(batch)
    for fn in step.values():  # warm-up
        for _ in range(3):
            fn()
    times = {system: [] for system in step}
    for k in range(steps):
        for system in SYSTEMS if k % 2 == 0 else SYSTEMS[::-1]:
            times[system].append(timed(step[system]))
    med = {s: float(np.median(wall(t))) for s, t in times.items()}
    med_cpu = {s: float(np.median(cpu(t))) for s, t in times.items()}
    lines = [
        "",
        f"Training step, ThreeLayerConvNet (hidden 500, Adam), batch {batch}, medians of "
        f"{steps} interleaved steps: distnet Solver {1e3 * med['distnet']:.1f} ms, PyTorch "
        f"{1e3 * med['torch']:.1f} ms; speed vs PyTorch {med['torch'] / med['distnet']:.2f} "
        f"(by CPU time {med_cpu['torch'] / med_cpu['distnet']:.2f}).",
    ]
    records = [
        {
            "part": "solver",
            "net": "ThreeLayerConvNet",
            **SOLVER_NET,
            "batch": batch,
            "system": s,
            **record_times(t),
        }
        for s, t in times.items()
    ]
    return records, lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--notebook-repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--only", default="", help="time only the layers whose name contains this")
    parser.add_argument(
        "--solver-steps",
        type=int,
        default=40,
        help="training steps of ThreeLayerConvNet per system (0: none)",
    )
    parser.add_argument(
        "--write", action="store_true", help=f"append the raw times to {RESULTS.name}"
    )
    parser.add_argument("--label", default="")
    parser.add_argument(
        "--baseline",
        default="",
        metavar="REV",
        help="also time distnet/fast_layers.py as of this git revision",
    )
    args = parser.parse_args()
    old = baseline_module(args.baseline) if args.baseline else None  # a bad REV fails first
    removed = clean_blas_env()
    one_thread_env()
    start = time.strftime("%Y-%m-%d %H:%M")
    machine = describe(removed)  # its load average is the one at the start
    records, lines = notebook_cells(args.notebook_repeats) if not args.only else ([], [])
    layer_records, layer_lines = bench_layers(
        args.batch, args.repeats, args.only, args.baseline, old
    )
    records, lines = records + layer_records, lines + layer_lines
    if args.solver_steps:
        solver_records, solver_lines = bench_solver(args.batch, args.solver_steps)
        records, lines = records + solver_records, lines + solver_lines
    print("\n".join(lines))
    if args.write:
        run = {
            "date": start,
            "command": " ".join(sys.orig_argv),
            "label": args.label,
            "repeats": args.repeats,
            "batch": args.batch,
            "machine": machine,
            "threads_env": {name: os.environ.get(name) for name in THREAD_VARS},
            "load_avg_end": os.getloadavg(),
        }
        append_run(RESULTS, run, records)
        print(f"\nappended to {RESULTS}")


if __name__ == "__main__":
    main()
