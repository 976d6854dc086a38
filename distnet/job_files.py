"""The ready job files shipped with distnet, found by name, and a job written back as TOML.

The files live once, in the repository's top-level jobs/; the package reaches them through
the link distnet/jobs (a wheel holds copies made at build time), so `distnet train large`
works the same from a checkout and after `pip install`:

    path = find_job("large")            # the packaged jobs/large.toml
    path = find_job("my/own.toml")      # an existing file is always taken as it is
    print(job_to_toml(load_job(path)))  # the resolved job; load_job reads it back equal
"""

from __future__ import annotations

import difflib
import json
import os
import re
from importlib import resources
from pathlib import Path

from distnet.config import SECTIONS, ConfigError, JobConfig


def ready_jobs() -> dict[str, Path]:
    """The packaged job files by name (the file name without .toml), sorted by name."""
    folder = Path(str(resources.files("distnet") / "jobs"))
    return {path.stem: path for path in sorted(folder.glob("*.toml"))}


def describe(path: Path) -> str:
    """A job file's summary: its leading comment up to the first ':' or '.'."""
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        words += line.lstrip("#").split()
    return re.split(r"[:.](?:\s|$)", " ".join(words), maxsplit=1)[0]


def find_job(job: str | os.PathLike) -> Path:
    """`job` itself if it is a path to a file or has a directory part, else the ready job
    of that name (with or without .toml)."""
    path = Path(job)
    if path.is_file() or path.parent != Path("."):
        return path  # load_job says what is wrong with it
    jobs = ready_jobs()
    name = path.name.removesuffix(".toml")
    if name in jobs:
        return jobs[name]
    close = difflib.get_close_matches(str(job), list(jobs), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ConfigError(
        f"{job}: no such job file, nor a ready job of that name ({hint}ready "
        f"jobs: {', '.join(jobs)}; `distnet train --list` describes them)"
    )


def job_to_toml(job: JobConfig) -> str:
    """The job as a TOML file with every setting spelled out (unset ones as comments)."""
    raw = job.to_dict()
    lines = [f"{key} = {_value(raw[key])}" for key in raw if key not in SECTIONS]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        for key, value in raw[section].items():
            lines.append(f"# {key} is unset" if value is None else f"{key} = {_value(value)}")
    return "\n".join(lines) + "\n"


def _value(value) -> str:
    # JSON's strings, numbers, booleans and arrays of them are valid TOML values; tables
    # (model.blocks) become inline tables.
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {_value(v)}" for key, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(_value, value)) + "]"
    return json.dumps(value)
