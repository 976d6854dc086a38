"""The library half of distnet never imports ray: the boundary is the `distributed/` folder."""

import subprocess
import sys

LIBRARY = [
    "layers",
    "layer_utils",
    "models",
    "optim",
    "solver",
    "gradcheck",
    "params",
    "schedules",
    "data",
    "config",
    "checkpoint",
    "errors",
]


def test_library_modules_leave_ray_out():
    imports = "; ".join(f"import distnet.{name}" for name in LIBRARY)
    code = (
        f"import sys; {imports}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'torch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_every_ray_import_lives_under_distributed():
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "distnet"
    outside = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "distributed" not in path.parts
        and any(
            line.lstrip().startswith(("import ray", "from ray"))
            for line in path.read_text().splitlines()
        )
    ]
    assert outside == []
