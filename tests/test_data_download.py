"""Downloading into the cache, against a real HTTP server on 127.0.0.1 started by the test."""

import hashlib
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from datagen import make_cifar_tarball

from distnet.data.download import cache_dir, download
from distnet.data.errors import DataError
from distnet.data.prepare import prepare_dataset
from distnet.data.reader import load_manifest

NAME = "cifar-10-python.tar.gz"


class Handler(BaseHTTPRequestHandler):
    """Behaviour by the first path component:
    /range/     honours Range;   /drop-once/  first response stops half way, then honours Range;
    /no-range/  ignores Range;   /always-drop/ ignores Range and always stops half way;
    /busy-once/ 503 first, then honours Range;   anything else: 404."""

    content = b""
    requests: list = []  # (path, Range header) of every request, in order

    def do_GET(self):
        Handler.requests.append((self.path, self.headers.get("Range")))
        kind = self.path.split("/")[1]
        seen = Counter(path for path, _ in Handler.requests)[self.path]
        if kind == "busy-once" and seen == 1:
            return self.send_error(503)
        if kind not in ("range", "drop-once", "no-range", "always-drop", "busy-once"):
            return self.send_error(404)
        start = 0
        ranged = self.headers.get("Range", "")
        if ranged and kind in ("range", "drop-once", "busy-once"):
            start = int(ranged.removeprefix("bytes=").removesuffix("-"))
            if start >= len(self.content):
                return self.send_error(416)
        body = self.content[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header(
                "Content-Range", f"bytes {start}-{len(self.content) - 1}/{len(self.content)}"
            )
        self.end_headers()
        if kind == "always-drop" or (kind == "drop-once" and seen == 1):
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tarball = make_cifar_tarball(tmp_path_factory.mktemp("served") / NAME, 60, 50)
    Handler.content = tarball.read_bytes()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTNET_CACHE", str(tmp_path / "cache"))
    Handler.requests.clear()
    return tmp_path / "cache"


def md5() -> str:
    return hashlib.md5(Handler.content).hexdigest()


def test_cache_dir_follows_distnet_cache_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTNET_CACHE", str(tmp_path / "elsewhere"))
    assert cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("DISTNET_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "distnet"


def test_prepare_from_url_downloads_into_the_cache_once(server, cache, tmp_path):
    url = f"{server}/range/{NAME}"
    manifest = prepare_dataset(
        str(tmp_path / "out"), source=url, md5=md5(), shards=2, num_val=20, progress=False
    )
    assert (cache / NAME).read_bytes() == Handler.content
    assert not (cache / f"{NAME}.part").exists()
    assert manifest.source_md5 == md5() and manifest.splits["test"].rows == 50
    prepare_dataset(
        str(tmp_path / "other"), source=url, md5=md5(), shards=2, num_val=20, progress=False
    )
    assert Handler.requests == [(f"/range/{NAME}", None)]  # the second run used the cache
    assert load_manifest(str(tmp_path / "other")) == manifest


def test_the_download_is_on_disk_before_it_takes_its_name(server, cache, monkeypatch):
    """fsync of the .part, then the rename, then fsync of the directory: a power cut
    cannot leave a named but empty file in the cache."""
    import os

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    download(f"{server}/range/{NAME}", cache / NAME, md5(), progress=False)
    part = str(cache / f"{NAME}.part")
    assert events == [("fsync", part), ("replace", part), ("fsync", str(cache))]
    assert (cache / NAME).read_bytes() == Handler.content


def test_partial_download_resumes_with_a_range_request(server, cache):
    cache.mkdir()
    have = len(Handler.content) // 3
    (cache / f"{NAME}.part").write_bytes(Handler.content[:have])
    download(f"{server}/range/{NAME}", cache / NAME, md5(), progress=False)
    assert (cache / NAME).read_bytes() == Handler.content
    assert Handler.requests == [(f"/range/{NAME}", f"bytes={have}-")]


def test_connection_dropped_half_way_is_resumed(server, cache):
    download(f"{server}/drop-once/{NAME}", cache / NAME, md5(), progress=False)
    assert (cache / NAME).read_bytes() == Handler.content
    first, second = Handler.requests
    assert first[1] is None and second[1] == f"bytes={len(Handler.content) // 2}-"


def test_server_ignoring_range_restarts_from_zero(server, cache):
    cache.mkdir()
    (cache / f"{NAME}.part").write_bytes(b"stale bytes from elsewhere")
    download(f"{server}/no-range/{NAME}", cache / NAME, md5(), progress=False)
    assert (cache / NAME).read_bytes() == Handler.content


def test_stale_part_longer_than_the_file_restarts(server, cache):
    cache.mkdir()
    (cache / f"{NAME}.part").write_bytes(b"x" * (len(Handler.content) + 10))
    download(f"{server}/range/{NAME}", cache / NAME, md5(), progress=False)
    assert (cache / NAME).read_bytes() == Handler.content


def test_transient_server_error_is_retried(server, cache):
    download(f"{server}/busy-once/{NAME}", cache / NAME, md5(), progress=False)
    assert (cache / NAME).read_bytes() == Handler.content and len(Handler.requests) == 2


def test_server_that_always_drops_gives_up_with_a_clear_error(server, cache):
    with pytest.raises(
        DataError,
        match=r"cannot download .*3 attempts in a row without "
        r"progress.*run the command again to resume",
    ):
        download(f"{server}/always-drop/{NAME}", cache / NAME, md5(), progress=False, attempts=3)
    assert not (cache / NAME).exists()
    assert len(Handler.requests) == 4  # one with progress, then three without


def test_wrong_checksum_after_download_keeps_nothing(server, cache):
    with pytest.raises(DataError, match=f"downloaded file has MD5 {md5()}, expected 0{{32}}"):
        download(f"{server}/range/{NAME}", cache / NAME, "0" * 32, progress=False)
    assert list(cache.iterdir()) == []


def test_missing_file_is_a_clear_error(server, cache, tmp_path):
    with pytest.raises(DataError, match="HTTP 404"):
        prepare_dataset(str(tmp_path / "out"), source=f"{server}/gone/{NAME}", progress=False)
    assert len(Handler.requests) == 1


def test_cached_copy_with_a_wrong_checksum_is_downloaded_again(server, cache):
    cache.mkdir()
    (cache / NAME).write_bytes(b"an old, different file")
    download(f"{server}/range/{NAME}", cache / NAME, md5(), progress=False)
    assert (cache / NAME).read_bytes() == Handler.content


def test_unsupported_source_scheme(tmp_path):
    with pytest.raises(DataError, match="must be a local file or an http"):
        prepare_dataset(str(tmp_path / "out"), source="ftp://example.org/c.tar.gz")


def test_unwritable_cache_is_a_clear_error(server, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("DISTNET_CACHE", str(blocker / "cache"))
    with pytest.raises(DataError, match=f"cannot write {blocker}/cache/{NAME}.part"):
        prepare_dataset(str(tmp_path / "out"), source=f"{server}/range/{NAME}", progress=False)
