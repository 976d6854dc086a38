"""Retake the TensorBoard pictures in docs/ from a real run: train a job, serve its logs with
TensorBoard on 127.0.0.1 and photograph each view in headless Chromium (tests/browser.py).

    python docs/screenshots.py --source ../shared/data/cifar-10-python.tar.gz \
        --md5 04140a4bf8b940be148901d3b3b8e5fb [--job two_layer] [--set train.num_epochs=3]
    python docs/screenshots.py --logdir runs/large    # an existing run's logs, no training

Writes docs/tensorboard_<view>.png: `curves` (loss and accuracy), `time_split` (the Custom
Scalars layout: the step's time split and per-worker compute), `hparams` (the HParams
table), and `filters` (the first conv layer's filters) when the run has a conv net.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # browser.py: headless Chromium over DevTools

from browser import render_page  # noqa: E402

# JavaScript: the elements of the page, shadow DOMs included (TensorBoard's plugins are
# Polymer elements), and how many chart lines through >= n points are drawn.
_ALL = """(() => { const found = []; const walk = root => { for (const el of
  root.querySelectorAll('*')) { found.push(el); if (el.shadowRoot) walk(el.shadowRoot); } };
  walk(document); return found; })()"""


def lines_drawn(min_points: int) -> str:
    """Chart lines are paths of M and L commands only (icons use curves and closings)."""
    pattern = f"/^M[^A-Za-z]*(L[^A-Za-z]*){{{min_points - 1},}}$/"
    return (
        f"{_ALL}.filter(el => el.tagName === 'path' && "
        f"{pattern}.test(el.getAttribute('d') || '')).length"
    )


def text_shown(text: str) -> str:
    return f"{_ALL}.some(el => (el.textContent || '').includes({text!r}))"


# view -> (URL fragment, the condition under which the page has drawn it, page height)
VIEWS = {
    "curves": (
        "?darkMode=false&tagFilter=train/loss|accuracy/#timeseries",
        f"{lines_drawn(10)} >= 1 && {text_shown('accuracy/val')}",
        1300,
    ),
    "time_split": ("?darkMode=false#custom_scalars", f"{lines_drawn(10)} >= 5", 1500),
    "hparams": ("?darkMode=false#hparams", text_shown("hparam/test_acc"), 800),
    "filters": (
        "?darkMode=false#images",
        f"{_ALL}.filter(el => el.tagName === 'IMG').length >= 1",
        900,
    ),
}


def train_run(job: str | None, settings: list[str], workdir: Path) -> Path:
    """Train `job` (a ready job's name or a file) with `settings`; its log directory."""
    import distnet
    from distnet.config import load_job
    from distnet.job_files import find_job

    overrides = [
        f"metrics.logdir={workdir / 'runs' / '{name}'}",
        f"checkpoint.dir={workdir / 'checkpoints' / '{name}'}",
        *settings,
    ]
    result = distnet.train(load_job(find_job(job) if job else None, overrides), overwrite=True)
    print(f"trained {result.steps} steps in {result.wall_s:.0f} s; test acc {result.test_acc:.3f}")
    return Path(result.logdir)


def serve(logdir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """TensorBoard on 127.0.0.1 (a port the OS picks) serving the runs beside `logdir`."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(logdir.parent),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    deadline = time.monotonic() + 120
    while not (found := re.search(r"at (http://127\.0\.0\.1:\d+)/", log.read_text())):
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"tensorboard did not start: {log.read_text()[-500:]}")
        time.sleep(0.2)
    return server, found.group(1)


def has_images(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/data/plugin/images/tags") as response:
        return b"filters/" in response.read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", help="a ready job's name or a job file (default: distnet's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--source", help="the CIFAR-10 tarball to prepare the data from")
    parser.add_argument("--md5")
    parser.add_argument("--logdir", type=Path, help="photograph this run's logs instead")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--prefix", default="tensorboard_")
    args = parser.parse_args(argv)
    settings = args.set + [
        f"data.{key}={value}"
        for key, value in (("source", args.source), ("md5", args.md5))
        if value
    ]
    with tempfile.TemporaryDirectory(prefix="distnet-screenshots-") as tmp:
        logdir = args.logdir or train_run(args.job, settings, Path(tmp))
        server, url = serve(logdir.resolve(), Path(tmp) / "tensorboard.log")
        try:
            views = VIEWS if has_images(url) else {k: v for k, v in VIEWS.items() if k != "filters"}
            for view, (fragment, ready, height) in views.items():
                picture = args.out / f"{args.prefix}{view}.png"
                render_page(f"{url}/{fragment}", picture, ready=ready, height=height)
                print(f"wrote {picture}")
        finally:
            server.terminate()
            server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
