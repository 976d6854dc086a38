"""A Python environment with PyTorch installed, for the tests that need torch importable
(issue 17: distnet must run, and never load torch, where torch is installed).

torch must not go into the environment the tests run in, so this builds a virtual
environment beside it: `--system-site-packages` (Ray, numpy, distnet's dependencies come
from the test environment), plus `pip install torch==TORCH` through pip as usual (from the
registry, or offline from PIP_FIND_LINKS where that holds the wheel). It is built once per
machine under the temp directory and reused; a lock keeps concurrent test runs from
building it twice. Its bin/ holds `ray` and `distnet` commands that run in it, so that
`ray start` nodes started with that bin/ first on PATH run their workers, and the jobs'
`distnet train`, with torch importable.

    env = torch_env()
    subprocess.run([env.python, "-c", "import torch"], check=True)
    environ = env.environ(os.environ)   # PATH with env.bin first
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

TORCH = "2.13.0"  # the bench extra's CPU build
INSTALL_TIMEOUT_S = 1800

# Console scripts of packages installed in the test environment run with its python; these
# run the same entry points with the venv's.
WRAPPERS = {
    "ray": "from ray.scripts.scripts import main",
    "distnet": "from distnet.cli import main",
}


@dataclass(frozen=True)
class TorchEnv:
    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> str:
        return str(self.bin / "python")

    def environ(self, base: dict[str, str]) -> dict[str, str]:
        """`base` with this environment's commands first on PATH."""
        return base | {
            "PATH": f"{self.bin}{os.pathsep}{base.get('PATH', '')}",
            "VIRTUAL_ENV": str(self.root),
        }


def torch_env() -> TorchEnv:
    """The environment, built if it is not there yet (minutes the first time)."""
    root = Path(tempfile.gettempdir()) / f"distnet-tests-torch-{TORCH}"
    env = TorchEnv(root)
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "ready").exists():
            _build(env)
    return env


def _build(env: TorchEnv) -> None:
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--clear", str(env.root)],
        check=True,
    )
    subprocess.run(
        [env.python, "-m", "pip", "install", "--quiet", f"torch=={TORCH}"],
        check=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    for name, entry in WRAPPERS.items():
        script = env.bin / name
        script.write_text(f"#!{env.python}\nimport sys\n{entry}\nsys.exit(main())\n")
        script.chmod(0o755)
    probe = subprocess.run(
        [env.python, "-c", "import torch, ray, distnet; print(torch.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.startswith(TORCH), probe.stdout
    (env.root / "ready").write_text(probe.stdout)
