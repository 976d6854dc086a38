"""What Ray itself costs per parameter-server step, without any distnet code: one server
and two workers pass a float32 vector of a given size around (server -> both workers ->
server), with a trivial computation, as Ray tasks through the object store and as a Ray
Compiled Graph over shared-memory channels.

    python -m benchmarks.ray_transport --sizes 1000 31000 307000 3800000 --repeats 3
    python -m benchmarks.ray_transport --address HOST:PORT   # join a running cluster

31,000 floats is the tiny overhead-probe net, 307,000 the two-layer net, 3.8M the large
net. Prints the median time per step of each transport and size.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _actors(size: int):
    import ray

    @ray.remote(num_cpus=0)
    class Server:
        def __init__(self):
            self.params = np.zeros(size, np.float32)

        def serve(self, step):
            return self.params

        def apply(self, *grads):
            self.params -= 1e-3 * (grads[0] + grads[1])
            return self.params

        def report(self, *grads):
            self.apply(*grads)
            return float(self.params[0])

    @ray.remote(num_cpus=1)
    class Worker:
        def __init__(self):
            self.model = np.empty(size, np.float32)

        def compute(self, params):
            self.model[:] = params  # as a GradientWorker loads its replica
            return self.model + 1.0

    return Server.remote(), [
        Worker.options(scheduling_strategy="SPREAD").remote() for _ in range(2)
    ]


def _mesh_actors(size: int):
    """A server and two workers that speak distnet's mesh (mesh.py) to each other."""
    import ray

    from distnet.distributed import mesh

    @ray.remote(num_cpus=0)
    class Server:
        def __init__(self):
            self.params = np.zeros(size, np.float32)
            self.end = mesh.ServerEnd()
            self.grads = [np.empty(size, np.float32) for _ in range(2)]

        def listen(self):
            return self.end.listen()

        def accept(self, token):
            self.end.accept(1, token, 2)

        def step(self, step):
            for conn in self.end.conns:
                mesh.send_array(conn, step, self.params)
            for conn, grad in zip(self.end.conns, self.grads, strict=True):
                mesh.recv_array(conn, step, np.float32, size, out=grad)
            self.params -= 1e-3 * (self.grads[0] + self.grads[1])
            return float(self.params[0])

    @ray.remote(num_cpus=1)
    class Worker:
        def __init__(self):
            self.model = np.empty(size, np.float32)
            self.end = mesh.WorkerEnd()

        def connect(self, token, index, addresses):
            self.end.connect(1, token, index, addresses)

        def step(self, step):
            conn = self.end.conns[0]
            mesh.recv_array(conn, step, np.float32, size, out=self.model)
            mesh.send_array(conn, step, self.model + 1.0)
            return step

    server = Server.remote()
    workers = [Worker.options(scheduling_strategy="SPREAD").remote() for _ in range(2)]
    token = b"0123456789abcdef"
    address = ray.get(server.listen.remote())
    ray.get(
        [server.accept.remote(token)]
        + [w.connect.remote(token, i, [address]) for i, w in enumerate(workers)]
    )
    return server, workers


def mesh_step_s(size: int, steps: int) -> float:
    """Per step: one `step` call on the server and on each worker (small arguments and
    results), one step kept in flight as distnet's driver does; the bytes go over TCP."""
    import ray

    server, workers = _mesh_actors(size)
    pending, times, last = [], [], None
    for i in range(steps):
        pending.append([server.step.remote(i)] + [w.step.remote(i) for w in workers])
        if len(pending) > 1:
            ray.get(pending.pop(0))
            now = time.perf_counter()
            if last is not None:
                times.append(now - last)
            last = now
    ray.get([ref for refs in pending for ref in refs])
    for actor in [server, *workers]:
        ray.kill(actor)
    return statistics.median(times[len(times) // 5 :])


def tasks_step_s(size: int, steps: int) -> float:
    """Per step: two worker tasks on the parameters' ref, one server task on their
    gradients' refs; one step kept in flight, as distnet's driver does."""
    import ray

    server, workers = _actors(size)
    params = ray.put(np.zeros(size, np.float32))
    pending, times, last = [], [], None
    for _ in range(steps):
        grads = [w.compute.remote(params) for w in workers]
        params = server.apply.remote(*grads)
        pending.append(params)
        if len(pending) > 1:
            ray.wait([pending.pop(0)], fetch_local=False)
            now = time.perf_counter()
            if last is not None:
                times.append(now - last)
            last = now
    ray.get(pending)
    for actor in [server, *workers]:
        ray.kill(actor)
    return statistics.median(times[len(times) // 5 :])


def graph_step_s(size: int, steps: int) -> float:
    """The same step as one compiled graph: server.serve -> workers -> server.report."""
    import ray
    from ray.dag import InputNode

    server, workers = _actors(size)
    with InputNode() as step:
        served = server.serve.bind(step)
        graph = server.report.bind(*[w.compute.bind(served) for w in workers])
    dag = graph.experimental_compile(_buffer_size_bytes=max(1_000_000, 4 * size + 65536))
    times = []
    for i in range(steps):
        start = time.perf_counter()
        ray.get(dag.execute(i))
        times.append(time.perf_counter() - start)
    # Ray 2.60 leaves the actors' loops hanging in teardown once messages exceed ~1 MB:
    # kill them (distnet's CompiledSteps.close does the same).
    dag.teardown(kill_actors=True)
    return statistics.median(times[len(times) // 5 :])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 31000, 307000, 3800000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--address", help="a running Ray cluster to join (default: local Ray)")
    parser.add_argument("--transports", nargs="+", choices=list(MEASURES), default=list(MEASURES))
    args = parser.parse_args()

    import ray
    from ray.dag import DAGContext

    from distnet.distributed.runtime import init_local_ray

    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        init_local_ray(2, log_to_driver=False)
    DAGContext.get_current().teardown_timeout = 1
    results: dict[tuple[int, str], list[float]] = {}
    for _ in range(args.repeats):
        for size in args.sizes:
            steps = 200 if size < 1_000_000 else 40
            for name in args.transports:
                results.setdefault((size, name), []).append(MEASURES[name](size, steps))
    print("| floats | MB | " + " | ".join(f"{n} ms/step" for n in args.transports) + " |")
    print("|---|---|" + "---|" * len(args.transports))
    for size in args.sizes:
        cells = [f"{1e3 * statistics.median(results[(size, n)]):.2f}" for n in args.transports]
        print(f"| {size:,} | {4 * size / 1e6:.2f} | " + " | ".join(cells) + " |")


MEASURES = {"tasks": tasks_step_s, "mesh": mesh_step_s, "graph": graph_step_s}


if __name__ == "__main__":
    main()
