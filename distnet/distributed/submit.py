"""Submit a job file to a running Ray cluster through the Ray Jobs API.

The job file is validated here first (a typo fails in a second, not after the upload),
then the working directory is uploaded and `distnet train JOB [--set ...]` runs on the
cluster's head node, where Ray sets RAY_ADDRESS so the trainer joins that cluster:

    result = submit_job("jobs/two_layer.toml", "http://127.0.0.1:8265", ["train.workers=4"])
    result.job_id, result.status   # "raysubmit_...", "SUCCEEDED"

Status, logs and stop afterwards are Ray's own `ray job status|logs|stop JOB_ID`.

Ray 2.60 clusters started with RAY_AUTH_MODE=token reject requests without the cluster's
token. The token comes from `token=`, else RAY_AUTH_TOKEN, else the file named by
RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token (Ray's own order) and travels as
`Authorization: Bearer <token>`; on the head node `ray get-auth-token` prints it.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from distnet.errors import DistnetError

# Never uploaded (gitignore syntax, on top of the directory's own .gitignore, which Ray
# applies too): outputs, datasets and caches at the top, build and VCS leftovers anywhere.
UPLOAD_EXCLUDES = ("/.git/", "/runs/", "/checkpoints/", "/data/", "/test-artifacts/", "/build/",
                   "__pycache__/", ".hypothesis/", ".pytest_cache/", "*.egg-info/")
TOKEN_HELP = ("get it on the head node with `ray get-auth-token` and pass it with --token, "
              "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class SubmitError(DistnetError):
    """The cluster could not be reached, refused the token, or refused the job."""


@dataclass(frozen=True)
class Token:
    value: str
    source: str  # where it came from, for error messages (never the token itself)


@dataclass(frozen=True)
class SubmitResult:
    job_id: str
    status: str | None  # a Ray JobStatus value once followed to the end; None with wait=False

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"


def find_token(explicit: str | None = None) -> Token | None:
    """The cluster token, looked up in Ray's order; None when there is none anywhere."""
    if explicit:
        return Token(explicit.strip(), "--token")
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return Token(os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN")
    path_var = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(path_var).expanduser() if path_var else Path.home() / ".ray" / "auth_token"
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        value = ""
    except OSError as err:
        raise SubmitError(f"cannot read the token file {path}: {err.strerror or err}") from None
    if value:
        return Token(value, f"RAY_AUTH_TOKEN_PATH={path}" if path_var else str(path))
    if path_var:  # as Ray does: a token file that was asked for must hold a token
        raise SubmitError(f"RAY_AUTH_TOKEN_PATH={path_var} names no file holding a token")
    return None


def entrypoint(job_path: str, overrides: Sequence[str] = ()) -> str:
    """The shell command the cluster runs (job_path relative to the uploaded directory)."""
    words = ["distnet", "train", job_path]
    for item in overrides:
        words += ["--set", item]
    return shlex.join(words)


def submit_job(
    job_path: str | os.PathLike,
    address: str,
    overrides: Sequence[str] = (),
    wait: bool = True,
    working_dir: str | os.PathLike = ".",
    extra_pip: Sequence[str] | None = None,
    token: str | None = None,
) -> SubmitResult:
    """Validate, upload and submit a job; follow its logs to stdout unless wait=False.

    `extra_pip` lists pip requirements to install for the job (runtime_env "pip").
    """
    from distnet.config import load_job

    load_job(job_path, overrides)  # raises ConfigError naming the bad key
    root = Path(working_dir).resolve()
    job = Path(job_path).resolve()
    if not job.is_relative_to(root):
        raise SubmitError(f"{job_path} is outside the uploaded working directory {root}; "
                          "run from the directory that contains it or pass --working-dir")
    runtime_env: dict = {"working_dir": str(root), "excludes": list(UPLOAD_EXCLUDES)}
    if extra_pip:
        runtime_env["pip"] = list(extra_pip)

    found = find_token(token)
    with _plain_errors(address, found):
        client = _connect(address, found)
        job_id = client.submit_job(
            entrypoint=entrypoint(job.relative_to(root).as_posix(), overrides),
            runtime_env=runtime_env,
        )
    print(f"distnet: submitted {job_id} to {address}", file=sys.stderr)
    if not wait:
        print(job_id)
        return SubmitResult(job_id, None)
    try:
        with _plain_errors(address, found):
            return SubmitResult(job_id, _follow(client, job_id))
    except KeyboardInterrupt:
        print(f"distnet: stopped following {job_id}; it keeps running "
              f"(ray job logs -f {job_id} / ray job stop {job_id})", file=sys.stderr)
        raise


def _connect(address: str, token: Token | None):
    if not address.startswith(("http://", "https://")):
        raise SubmitError(f"--address {address!r} must be the dashboard's HTTP address, "
                          "e.g. http://HEAD:8265")
    from ray.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {token.value}"} if token else None
    return JobSubmissionClient(address, headers=headers)


@contextmanager
def _plain_errors(address: str, token: Token | None):
    """Turn Ray's connection and authentication failures into one-line SubmitErrors."""
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError:
        if token is None:
            raise SubmitError(f"{address} requires an authentication token and none was "
                              f"found; {TOKEN_HELP}") from None
        raise SubmitError(f"{address} rejected the authentication token from {token.source}; "
                          f"{TOKEN_HELP}") from None
    except ConnectionError:
        raise SubmitError(f"cannot reach a Ray dashboard at {address} "
                          "(is the cluster up and the address right?)") from None
    except RuntimeError as err:  # the Jobs API answered with an error status
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SubmitError(f"Ray Jobs API at {address}: {first_line}") from None


def _follow(client, job_id: str) -> str:
    """Print the job's logs as they come; return its terminal status."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    asyncio.run(tail())
    # The log stream ends with the job; poll in case it closed a moment before the status.
    while (status := str(client.get_job_status(job_id).value)) not in TERMINAL:
        time.sleep(1)
    return status
