"""Seeded random failures for a training run: the failure tests and benchmarks/kill_soak.py.

A schedule is a list of `Kill(at_s, target)` drawn from a seed: `at_s` seconds after the
run's first worker is alive, SIGKILL one worker, one parameter server, one of each
('both'), or send the driver SIGINT ('interrupt', then resume). A second kill drawn soon
after the first tends to land in the recovery from the first, which is the point.

Victims are found by process title (Ray names an actor's process `ray::<Class>`) among
this process's descendants (the Ray it started, never another test's on a shared
machine), so the killer needs nothing from the driver and works with a driver in another
process. The driver runs as `python tests/killer.py JOB ADDRESS OUT [--resume]
[--interrupt-at PHASE:N] [--kill-server-at STEP]` (`drive`, below): it prints one line per
completed step and per phase of the run (hooks.PHASES), and `trained` once `train`
returned (no SIGINT is sent after it), so the watcher bounds the time
between steps and dumps the driver's stacks with py-spy when it hangs; `--interrupt-at
PHASE:N` makes the driver send itself SIGINT at the N-th time (1-based) it reaches PHASE,
exactly there; `--kill-server-at STEP` kills a parameter server from the driver once
STEP is booked (so that the recovery phases come, at a known point).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

TARGETS = ("worker", "server", "both")
CLASSES = {
    "worker": ("GradientWorker",),
    "server": ("ParameterServer",),
    "both": ("GradientWorker", "ParameterServer"),
}


@dataclass(frozen=True)
class Kill:
    at_s: float
    target: str  # one of TARGETS, or "interrupt"


def random_schedule(
    seed: int, duration_s: float, max_kills: int = 3, interrupt: bool = False
) -> list[Kill]:
    """1..max_kills kills spread over `duration_s`; sometimes two close together."""
    rng = random.Random(seed)
    times = sorted(rng.uniform(0.3, duration_s) for _ in range(rng.randint(1, max_kills)))
    if len(times) > 1 and rng.random() < 0.5:
        times[1] = times[0] + rng.uniform(0.2, 3.0)  # during the recovery from the first
    kills = [Kill(round(t, 2), rng.choice(TARGETS)) for t in sorted(times)]
    if interrupt:
        kills.append(Kill(round(rng.uniform(0.3, duration_s), 2), "interrupt"))
    return sorted(kills, key=lambda k: k.at_s)


def actor_pids(class_name: str) -> list[int]:
    """Live processes of actors of `class_name` that this process's Ray started, sorted."""
    pids = []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = proc.cmdline()
        except psutil.Error:  # ended meanwhile
            continue
        if cmd and cmd[0].startswith(f"ray::{class_name}"):
            pids.append(proc.pid)
    return sorted(pids)


@dataclass
class Watch:
    """What happened to one driver process."""

    returncode: int | None = None
    steps: int = 0
    max_gap_s: float = 0.0  # longest wait for a step (start-up excluded)
    first_step_s: float | None = None  # from the clock's start (see run_driver) to step 1
    hung: bool = False
    stacks: str = ""
    fired: list[tuple[float, str, list[int]]] = field(default_factory=list)
    interrupt_exit_s: float | None = None  # SIGINT to exit
    phases: list[tuple[str, int]] = field(default_factory=list)  # (phase, step) as reached
    interrupted_in: tuple[str, int] | None = None  # where the driver sent itself SIGINT
    ended_s: float = 0.0  # from the clock's start to the driver's exit
    trained_s: float | None = None  # from the clock's start to `train` having returned
    stderr: str = ""


def _fire(kill: Kill, rng: random.Random, driver: subprocess.Popen) -> list[int]:
    if kill.target == "interrupt":
        driver.send_signal(signal.SIGINT)
        return [driver.pid]
    victims = []
    for cls in CLASSES[kill.target]:
        pids = actor_pids(cls)
        if pids:
            victims.append(pids[rng.randrange(len(pids))])
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return victims


def run_driver(
    job_file: Path,
    address: str,
    out: Path,
    schedule: list[Kill] = (),
    seed: int = 0,
    step_bound_s: float = 60.0,
    exit_bound_s: float = 10.0,
    resume: bool = False,
    total_bound_s: float = 900.0,
    interrupt_at: tuple[str, int] | None = None,
    kill_server_at: int | None = None,
    clock: str = "workers",
    pace_s: float = 0.0,
) -> Watch:
    """Run the driver in a child process, fire `schedule`, bound every wait.

    The schedule's times count from the first gradient worker alive (`clock="workers"`),
    from the driver's first step (`clock="step"`) or from its start (`clock="start"`).
    `interrupt_at=(phase, n)`: the driver sends itself SIGINT at the n-th time it reaches
    `phase` (see the module docstring); `kill_server_at`: it kills parameter server 0 once
    that step is booked; `pace_s`: the driver books at most one step per pace_s (a run
    as long on a fast machine as on a slow one; the results do not change)."""
    cmd = [sys.executable, __file__, str(job_file), address, str(out)]
    if pace_s:
        cmd += ["--pace-s", str(pace_s)]
    if resume:
        cmd.append("--resume")
    if interrupt_at:
        cmd += ["--interrupt-at", f"{interrupt_at[0]}:{interrupt_at[1]}"]
    if kill_server_at is not None:
        cmd += ["--kill-server-at", str(kill_server_at)]
    earlier = set(actor_pids("GradientWorker"))  # a previous driver's, maybe still ending
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch, rng = Watch(), random.Random(seed)
    last = [time.monotonic(), False]  # time of the last step, whether steps have begun
    err_lines: list[str] = []
    interrupted_at = None  # when SIGINT reached the driver
    first_step = [None]
    trained = [None]  # when the driver said that `train` returned

    def read_steps():
        nonlocal interrupted_at
        for line in driver.stdout:
            if line.startswith("step "):
                now = time.monotonic()
                if last[1]:
                    watch.max_gap_s = max(watch.max_gap_s, now - last[0])
                else:
                    first_step[0] = now
                last[:] = [now, True]
                watch.steps += 1
            elif line.startswith("phase "):
                _, name, step = line.split()
                watch.phases.append((name, int(step)))
            elif line.startswith("trained"):
                trained[0] = time.monotonic()
            elif line.startswith("interrupting ") and interrupted_at is None:
                interrupted_at = time.monotonic()
                _, name, step = line.split()
                watch.interrupted_in = (name, int(step))

    readers = [
        threading.Thread(target=read_steps, daemon=True),
        threading.Thread(target=lambda: err_lines.extend(driver.stderr), daemon=True),
    ]
    for t in readers:
        t.start()
    start = time.monotonic()
    while driver.poll() is None and (
        (clock == "workers" and not set(actor_pids("GradientWorker")) - earlier)
        or (clock == "step" and not last[1])
    ):
        if time.monotonic() - start > total_bound_s:
            break
        time.sleep(0.05)
    t0, pending = time.monotonic(), list(schedule)
    while driver.poll() is None:
        now = time.monotonic()
        while pending and now - t0 >= pending[0].at_s and interrupted_at is None and not trained[0]:
            kill = pending.pop(0)
            watch.fired.append((round(now - t0, 2), kill.target, _fire(kill, rng, driver)))
            if kill.target == "interrupt":
                interrupted_at = now
        waited = now - last[0] if last[1] else 0.0
        overdue = interrupted_at is not None and now - interrupted_at > exit_bound_s
        if waited > step_bound_s or overdue or now - start > total_bound_s:
            watch.hung = True
            watch.stacks = _stacks(driver.pid)
            driver.kill()
            break
        time.sleep(0.05)
    ended = time.monotonic()
    watch.ended_s = round(ended - t0, 2)
    driver.wait(timeout=30)
    for t in readers:
        t.join(timeout=5)
    if first_step[0] is not None:
        watch.first_step_s = round(first_step[0] - t0, 2)
    if trained[0] is not None:
        watch.trained_s = round(trained[0] - t0, 2)
    if interrupted_at is not None and not watch.hung:
        watch.interrupt_exit_s = round(ended - interrupted_at, 2)
    watch.returncode, watch.stderr = driver.returncode, "".join(err_lines)
    return watch


def _stacks(pid: int) -> str:
    try:
        return subprocess.run(
            ["py-spy", "dump", "--pid", str(pid)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"(no stacks: {err})"


def write_job_file(raw: dict, path: Path) -> Path:
    """A job dict (sections as sub-dicts) as a TOML job file."""
    top = [f"{k} = {json.dumps(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for section, values in raw.items():
        if isinstance(values, dict):
            top.append(f"[{section}]")
            top += [f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None]
    path.write_text("\n".join(top) + "\n")
    return path


def read_result(out: Path):
    """The final parameters and histories a `drive` run wrote into `out`."""
    import numpy as np

    summary = json.loads((out / "result.json").read_text())
    return np.load(out / "final_params.npy"), np.load(out / "params.npy"), summary


def drive(
    job_file: str,
    address: str,
    out: str,
    resume: bool,
    interrupt_at: tuple[str, int] | None = None,
    kill_server_at: int | None = None,
    pace_s: float = 0.0,
) -> int:
    """The driver process: train, print a line per step and per phase, write the result
    into `out`; SIGINT to itself at `interrupt_at` = (phase, n-th time); SIGKILL to
    parameter server 0 once step `kill_server_at` is booked (once: a recovery books the
    steps after its checkpoint again)."""
    import numpy as np

    from distnet.config import load_job
    from distnet.distributed.driver import train
    from distnet.distributed.hooks import PHASES, Hooks

    reached: dict[str, int] = {}
    booked = [time.monotonic()]  # when the previous step was booked (pace_s)

    def on_phase(phase: str, step: int) -> None:
        assert phase in PHASES, phase
        reached[phase] = reached.get(phase, 0) + 1
        print(f"phase {phase} {step}", flush=True)
        if interrupt_at == (phase, reached[phase]):
            print(f"interrupting {phase} {step}", flush=True)
            os.kill(os.getpid(), signal.SIGINT)  # raised here, in the driver's main thread
            time.sleep(1)  # not reached: Python runs the handler before the next bytecode

    def on_step(event) -> None:
        if pace_s:
            time.sleep(max(0.0, booked[0] + pace_s - time.monotonic()))
            booked[0] = time.monotonic()
        print(f"step {event.step}", flush=True)
        if event.step == kill_server_at and "killed" not in reached:
            reached["killed"] = 1
            os.kill(event.group.server_pids()[0], signal.SIGKILL)

    job = load_job(job_file)
    try:
        result = train(
            job,
            address=address,
            resume=resume,
            overwrite=not resume,
            progress=False,
            hooks=Hooks(on_phase=on_phase),
            on_step=on_step,
        )
        print("trained", flush=True)  # a SIGINT from now on came after the run
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        np.save(out_dir / "final_params.npy", result.final_params)
        np.save(out_dir / "params.npy", result.params)
        keep = ("loss_history", "train_acc_history", "val_acc_history")
        summary = result.summary() | {k: getattr(result, k) for k in keep}
        (out_dir / "result.json").write_text(json.dumps(summary))
    except KeyboardInterrupt:
        return 130
    # Done: a SIGINT while the interpreter exits (Python has given SIGINT back to the
    # system by then) would end the process by the signal, with nothing left to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    at = args[args.index("--interrupt-at") + 1].split(":") if "--interrupt-at" in args else None
    kill = int(args[args.index("--kill-server-at") + 1]) if "--kill-server-at" in args else None
    sys.exit(
        drive(
            *args[:3],
            resume="--resume" in args,
            interrupt_at=(at[0], int(at[1])) if at else None,
            kill_server_at=kill,
            pace_s=float(args[args.index("--pace-s") + 1]) if "--pace-s" in args else 0.0,
        )
    )
