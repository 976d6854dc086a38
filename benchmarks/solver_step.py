"""Time distnet's single-process training step: the Solver's own `_step` (sample a
minibatch from the in-memory float32 arrays, model.loss forward + backward, the update
rule applied per parameter), with `--threads` BLAS threads and as many threads for the
update rule's passes over large parameters (PyTorch gets the same count for everything).

    python -m benchmarks.solver_step numpy --config two_layer --steps 200 --data DATASET
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.harness import child
from benchmarks.harness.machine import blas_info


def run(config_name: str, steps: int, data: str, threads: int) -> child.ChildResult:
    from threadpoolctl import threadpool_limits

    from distnet import optim
    from distnet.config import JobConfig
    from distnet.models import build_model
    from distnet.solver import Solver

    start = time.perf_counter()
    config = child.config_named(config_name)
    job = JobConfig.from_dict(
        config.job_dict(workers=1, data=data, tmp="/nonexistent", max_steps=steps)
    )
    X, y = child.train_arrays(data, config)
    model = build_model(job.model, seed=0)
    solver = Solver(
        model,
        {"X_train": X, "y_train": y, "X_val": X[:1], "y_val": y[:1]},
        update_rule=config.update_rule,
        optim_config={"learning_rate": config.learning_rate},
        batch_size=config.batch_size,
        verbose=False,
        seed=0,
    )
    optim.set_num_threads(threads)
    setup = time.perf_counter() - start
    with threadpool_limits(limits=threads, user_api="blas"):
        times, cpu = child.timed_steps(lambda i: solver._step(i + 1), steps)
        blas = blas_info()
    if not np.isfinite(solver.loss_history[-1]):
        raise SystemExit(f"{config_name}: the loss diverged; the timing would be meaningless")
    return child.ChildResult(
        "numpy", config_name, times, threads, blas, [child.peak_rss_mb()], setup, cpu
    )


def main() -> None:
    args = child.parse_args(__doc__, ("numpy",))
    child.emit(run(args.config, args.steps, args.data, args.threads))


if __name__ == "__main__":
    main()
