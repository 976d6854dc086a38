"""Fetch a file over HTTP(S) into the cache, resuming partial downloads, checking its MD5.

The file grows as `<name>.part` and takes its final name only once complete and verified,
so a file in the cache under its own name is always whole (its data is fsynced before the
rename, so that holds after a power cut too).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from distnet.atomic import replace_durably
from distnet.data.errors import DataError

CHUNK = 1 << 20
TIMEOUT_S = 60
RETRY_HTTP = (408, 429, 500, 502, 503, 504)  # statuses worth retrying; others are final


def cache_dir() -> Path:
    """`$DISTNET_CACHE`, or ~/.cache/distnet."""
    return Path(os.environ.get("DISTNET_CACHE") or Path.home() / ".cache" / "distnet").expanduser()


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    url: str, dest: Path, md5: str | None, progress: bool = True, attempts: int = 5
) -> Path:
    """Download `url` to `dest` unless a verified copy is already there.

    A dropped connection is resumed from the `.part` file with an HTTP Range request (or
    restarted if the server ignores Range), up to `attempts` tries in a row without progress.
    """
    if dest.exists() and (md5 is None or file_md5(dest) == md5):
        return dest
    partial = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        stalled = 0
        while True:
            before = _size(partial)
            try:
                if _fetch_rest(url, partial, progress):
                    break
                reason = "connection closed early"
            except (
                urllib.error.URLError,
                http.client.HTTPException,
                ConnectionError,
                TimeoutError,
            ) as err:
                if isinstance(err, urllib.error.HTTPError) and err.code not in RETRY_HTTP:
                    raise DataError(f"cannot download {url}: HTTP {err.code} {err.reason}") from err
                reason = str(getattr(err, "reason", None) or err) or type(err).__name__
            stalled = 0 if _size(partial) > before else stalled + 1
            if stalled >= attempts:
                resume = "; run the command again to resume" if _size(partial) else ""
                raise DataError(
                    f"cannot download {url}: {reason} ({attempts} attempts in a row "
                    f"without progress){resume}"
                )
            time.sleep(min(0.1 * 2**stalled, 5.0))
    except OSError as err:  # the local side: cache not writable, disk full ...
        raise DataError(f"cannot write {partial}: {err.strerror or err}") from err
    if md5 is not None and (actual := file_md5(partial)) != md5:
        partial.unlink()
        raise DataError(f"{url}: downloaded file has MD5 {actual}, expected {md5}")
    try:
        replace_durably(partial, dest)
    except OSError as err:
        raise DataError(f"cannot write {dest}: {err.strerror or err}") from err
    return dest


def _fetch_rest(url: str, partial: Path, progress: bool) -> bool:
    """Append what `partial` lacks; True when the server says the file is complete."""
    have = _size(partial)
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416:  # the .part is no prefix of this file (or already whole): restart
            partial.unlink()
            return False
        raise
    with response:
        if response.status != 206:  # server ignored Range: start over
            have = 0
        total = _total_size(response, have)
        mode = "ab" if have else "wb"
        with (
            open(partial, mode) as out,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                file=sys.stderr,
                desc=partial.name.removesuffix(".part"),
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    return total is None or _size(partial) == total


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _total_size(response, have: int) -> int | None:
    """The whole file's size from the response headers, if the server says."""
    content_range = response.headers.get("Content-Range", "")  # "bytes 100-199/200"
    if response.status == 206 and content_range.rpartition("/")[2].isdigit():
        return int(content_range.rpartition("/")[2])
    length = response.headers.get("Content-Length", "")
    if not length.isdigit():
        return None
    return int(length) + (have if response.status == 206 else 0)
