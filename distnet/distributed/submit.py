"""Submit a job file to a running Ray cluster through the Ray Jobs API.

The job file is validated here first (a typo fails in a second, not after the upload),
then the working directory is uploaded (what its .gitignore/.rayignore files list, outputs
and files that look like secrets left out; the count and size are printed) and
`distnet train JOB [--set ...]` runs on the cluster's head node, where Ray sets
RAY_ADDRESS so the trainer joins that cluster:

    result = submit_job("jobs/two_layer.toml", "http://127.0.0.1:8265", ["train.workers=4"])
    result.job_id, result.status   # "raysubmit_...", "SUCCEEDED"

Status, logs and stop afterwards are Ray's own `ray job status|logs|stop JOB_ID`.

The address is the cluster's dashboard, as for `ray job submit`: http(s)://HOST:PORT, or
HOST:PORT meaning http://HOST:PORT; without one, RAY_API_SERVER_ADDRESS, else RAY_ADDRESS.
`extra_pip` requirements are installed for the job (runtime_env "pip").

Ray 2.60 clusters started with RAY_AUTH_MODE=token reject requests without the cluster's
token. The token comes from `token=`, else RAY_AUTH_TOKEN, else the file named by
RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token (Ray's own order) and travels as
`Authorization: Bearer <token>`; on the head node `ray get-auth-token` prints it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from distnet.errors import DistnetError

# Never uploaded (gitignore syntax, on top of the .gitignore and .rayignore files, which Ray
# applies in every directory): outputs, datasets and caches at the top, build and VCS
# leftovers anywhere.
UPLOAD_EXCLUDES = (
    "/.git/",
    "/runs/",
    "/checkpoints/",
    "/data/",
    "/test-artifacts/",
    "/build/",
    "__pycache__/",
    ".hypothesis/",
    ".pytest_cache/",
    "*.egg-info/",
)
# Nor, anywhere, what by its name holds a secret (whoever can read the cluster's storage
# could read it): environment files, private keys and certificates, credential files and
# directories, token files.
SECRET_EXCLUDES = (
    ".env",
    ".env.*",
    "*.env",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".netrc",
    ".pgpass",
    "credentials",
    "credentials.json",
    ".ssh/",
    ".aws/",
    ".ray/",
    ".docker/",
    "*token",
    "*token.txt",
    "*.token",
)
TOKEN_HELP = (
    "get it on the head node with `ray get-auth-token` and pass it with --token, "
    "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"
)
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class SubmitError(DistnetError):
    """The cluster could not be reached, refused the token, or refused the job."""


@dataclass(frozen=True)
class Token:
    value: str
    source: str  # where it came from, for error messages (never the token itself)
    path: Path | None = None  # the file it was read from


@dataclass(frozen=True)
class SubmitResult:
    job_id: str
    status: str | None  # a Ray JobStatus value once followed to the end; None with wait=False
    reason: str | None = None  # why a failed job's driver died, in one line (failure_reason)

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"


@dataclass(frozen=True)
class Upload:
    """What `distnet submit` uploads of a working directory: the files Ray packs, found by
    Ray's own walk (with its default excludes, .gitignore and .rayignore files)."""

    root: Path
    files: list[Path]  # relative to root
    size: int  # bytes
    secrets: list[Path]  # left out by SECRET_EXCLUDES (or as the token file)
    excludes: list[str]  # the runtime_env "excludes" that leave them out

    @classmethod
    def of(cls, root: Path, token: Token | None = None) -> Upload:
        from ray._private import ray_constants
        from ray._private.runtime_env.packaging import (
            PathSpec,
            _dir_travel,
            _get_excludes,
        )

        excludes = list(UPLOAD_EXCLUDES) + list(SECRET_EXCLUDES)
        token_file = token.path.resolve() if token and token.path else None
        if token_file and token_file.is_relative_to(root):  # named by RAY_AUTH_TOKEN_PATH
            excludes.append("/" + token_file.relative_to(root).as_posix())
        found: list[Path] = []

        def visit(path: Path) -> None:
            if path.is_file():
                found.append(path)

        _dir_travel(
            root,
            [
                _get_excludes(
                    root, ray_constants.get_runtime_env_default_excludes() + list(UPLOAD_EXCLUDES)
                )
            ],
            visit,
            include_gitignore=os.environ.get(ray_constants.RAY_RUNTIME_ENV_IGNORE_GITIGNORE, "0")
            != "1",
            logger=logging.getLogger(__name__),
        )  # Ray says it again when it uploads
        secret = PathSpec.from_lines("gitwildmatch", excludes[len(UPLOAD_EXCLUDES) :])
        relative = sorted(path.relative_to(root) for path in found)
        secrets = [p for p in relative if secret.match_file(p.as_posix())]
        files = [p for p in relative if p not in secrets]
        return cls(root, files, sum((root / p).stat().st_size for p in files), secrets, excludes)

    def __str__(self) -> str:
        from distnet.distributed.budget import format_bytes

        line = f"{len(self.files)} files ({format_bytes(self.size)}) from {self.root}"
        if self.secrets:
            shown = ", ".join(p.as_posix() for p in self.secrets[:5])
            more = f" and {len(self.secrets) - 5} more" if len(self.secrets) > 5 else ""
            line += f"; left out as secrets: {shown}{more}"
        return line


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
        return Token(value, f"RAY_AUTH_TOKEN_PATH={path}" if path_var else str(path), path)
    if path_var:  # as Ray does: a token file that was asked for must hold a token
        raise SubmitError(f"RAY_AUTH_TOKEN_PATH={path_var} names no file holding a token")
    return None


ADDRESS_VARIABLES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


def dashboard_address(address: str | None = None) -> str:
    """The dashboard URL to submit to: `address`, else $RAY_API_SERVER_ADDRESS, else
    $RAY_ADDRESS; HOST:PORT means http://HOST:PORT. SubmitError for none or a bad one."""
    from urllib.parse import urlsplit

    given = "--address"
    if not address:
        given, address = next(
            ((v, os.environ[v]) for v in ADDRESS_VARIABLES if os.environ.get(v)), (None, None)
        )
    if not address:
        raise SubmitError(
            "submit needs --address http://HEAD:8265 (or RAY_API_SERVER_ADDRESS or RAY_ADDRESS)"
        )
    url = address.strip() if "://" in address else f"http://{address.strip()}"
    shown = f"{given} {address!r}" if given == "--address" else f"{given}={address}"
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or address.strip() in ("auto", "local")  # Ray's own addresses, not a dashboard's
        or port == -1
        or parts.path.strip("/")
        or parts.query
        or parts.fragment
    ):
        raise SubmitError(
            f"{shown} must be the dashboard's HTTP address, e.g. http://HEAD:8265 or HEAD:8265"
        )
    return url.rstrip("/")


def pip_requirements(packages: Sequence[str]) -> list[str]:
    """`packages` checked as pip requirements (NAME[extras]VERSION; NAME @ URL)."""
    from packaging.requirements import InvalidRequirement, Requirement

    for package in packages:
        try:
            Requirement(package)
        except InvalidRequirement as err:
            reason = str(err).splitlines()[0]
            raise SubmitError(
                f"--pip {package!r} is not a pip requirement such as 'torch==2.13.0' ({reason})"
            ) from None
    return list(packages)


def entrypoint(job_path: str, overrides: Sequence[str] = ()) -> str:
    """The shell command the cluster runs (job_path relative to the uploaded directory)."""
    words = ["distnet", "train", job_path]
    for item in overrides:
        words += ["--set", item]
    return shlex.join(words)


def submit_job(
    job_path: str | os.PathLike,
    address: str | None = None,
    overrides: Sequence[str] = (),
    wait: bool = True,
    working_dir: str | os.PathLike = ".",
    extra_pip: Sequence[str] | None = None,
    token: str | None = None,
) -> SubmitResult:
    """Validate, upload and submit a job; follow its logs to stdout unless wait=False.

    `address`: see dashboard_address. `extra_pip` lists pip requirements to install for
    the job (runtime_env "pip"). Every argument is checked before anything is uploaded.
    """
    from distnet.config import load_job

    address = dashboard_address(address)
    extra_pip = pip_requirements(extra_pip or ())
    load_job(job_path, overrides)  # raises ConfigError naming the bad key
    root = Path(working_dir).resolve()
    job = Path(job_path).resolve()
    if not job.is_relative_to(root):
        raise SubmitError(
            f"{job_path} is outside the uploaded working directory {root}; "
            "run from the directory that contains it or pass --working-dir"
        )
    found = find_token(token)
    upload = Upload.of(root, found)
    # A native crash (a library aborting while it loads) then dumps the Python stack too,
    # from which failure_reason names the import.
    runtime_env: dict = {
        "working_dir": str(root),
        "excludes": upload.excludes,
        "env_vars": {"PYTHONFAULTHANDLER": "1"},
    }
    if extra_pip:
        runtime_env["pip"] = list(extra_pip)
    with _plain_errors(address, found):
        client = _connect(address, found)
        job_id = client.submit_job(
            entrypoint=entrypoint(job.relative_to(root).as_posix(), overrides),
            runtime_env=runtime_env,
        )
    print(f"distnet: uploaded {upload}", file=sys.stderr)
    print(f"distnet: submitted {job_id} to {address}", file=sys.stderr)
    if not wait:
        print(job_id)
        return SubmitResult(job_id, None)
    try:
        with _plain_errors(address, found):
            status = _follow(client, job_id)
            reason = None
            if status == "FAILED":  # the log's account, else Ray's (e.g. a lost supervisor)
                said = str(client.get_job_info(job_id).message or "").strip().splitlines()
                reason = failure_reason(client.get_job_logs(job_id)) or (said[0] if said else None)
            return SubmitResult(job_id, status, reason)
    except KeyboardInterrupt:
        print(
            f"distnet: stopped following {job_id}; it keeps running "
            f"(ray job logs -f {job_id} / ray job stop {job_id})",
            file=sys.stderr,
        )
        raise


def _connect(address: str, token: Token | None):
    from ray.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {token.value}"} if token else None
    # Ray's client would let these override `address` (dashboard_address read them already)
    # and take a HOST:PORT in them for a GCS address to ask for the dashboard's.
    hidden = {v: os.environ.pop(v) for v in ADDRESS_VARIABLES if v in os.environ}
    try:
        return JobSubmissionClient(address, headers=headers)
    finally:
        os.environ.update(hidden)


@contextmanager
def _plain_errors(address: str, token: Token | None):
    """Turn Ray's connection and authentication failures into one-line SubmitErrors."""
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError:
        if token is None:
            raise SubmitError(
                f"{address} requires an authentication token and none was found; {TOKEN_HELP}"
            ) from None
        raise SubmitError(
            f"{address} rejected the authentication token from {token.source}; {TOKEN_HELP}"
        ) from None
    except ConnectionError:
        raise SubmitError(
            f"cannot reach a Ray dashboard at {address} (is the cluster up and the address right?)"
        ) from None
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


_MODULE_FRAME = re.compile(r'^\s*File "(?P<file>[^"<][^"]*)", line \d+ in <module>$')
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit): ")
_IMPORT = re.compile(r"^\s+(?:from\s+(?P<source>[\w.]+)\s+import|import\s+(?P<name>[\w.]+))")


def failure_reason(logs: str) -> str | None:
    """Why a job's driver died, in one line, from its log: a native crash (Python's
    faulthandler dump: "Fatal Python error: Aborted" and the stack, see PYTHONFAULTHANDLER
    above) with the module it was importing and the library's last words; distnet's own
    one-line error; else a Python exception's last line, with the import it came from.
    None when the log says none of these."""
    lines = logs.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Fatal Python error: "):
            said = next((s.strip() for s in reversed(lines[:i]) if s.strip()), "")
            frames = (_MODULE_FRAME.match(s) for s in lines[i + 1 :])
            module = next((_module_name(m["file"]) for m in frames if m), None)
            return (
                f"the driver died ({line.removeprefix('Fatal Python error: ')})"
                + (f" while importing {module}" if module else "")
                + (f": {said}" if said else "")
            )
    errors = [s for s in lines if s.startswith("distnet: error: ")]
    if errors:
        return errors[-1].removeprefix("distnet: error: ")
    raised = [i for i, s in enumerate(lines) if _EXCEPTION.match(s)]
    if not raised:
        return None
    imports = [m for s in lines[: raised[-1]] if (m := _IMPORT.match(s))]
    within = f" (while importing {imports[-1]['source'] or imports[-1]['name']})" if imports else ""
    return lines[raised[-1]].strip() + within


def _module_name(file: str) -> str:
    """The module a source file is: dotted from site-packages, else its own name."""
    path = Path(file)
    parts = path.with_suffix("").parts
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    else:
        parts = parts[-2:] if path.name == "__init__.py" else parts[-1:]
    return ".".join(part for part in parts if part != "__init__")
