"""A real S3-compatible server (moto's) on 127.0.0.1 for a test, with one bucket.

with s3_server("runs") as s3:
    s3.uri("a/b")        # s3://testing:testing@runs/a/b?endpoint_override=...
    s3.filesystem        # pyarrow's S3FileSystem on it
    s3.endpoint          # http://127.0.0.1:PORT (boto3's endpoint_url, S3_ENDPOINT)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from pyarrow import fs as pafs


@dataclass
class S3Server:
    server: object  # moto.server.ThreadedMotoServer
    bucket: str
    filesystem: pafs.S3FileSystem
    endpoint: str
    options: str  # the URI query that points pyarrow at this server

    def uri(self, key: str) -> str:
        return f"s3://testing:testing@{self.bucket}/{key}?{self.options}"

    def keys(self, prefix: str = "") -> list[str]:
        """The objects under `prefix`, as paths below the bucket."""
        selector = pafs.FileSelector(
            f"{self.bucket}/{prefix}".rstrip("/"), recursive=True, allow_not_found=True
        )
        return sorted(
            info.path.split("/", 1)[1]
            for info in self.filesystem.get_file_info(selector)
            if info.is_file
        )


@contextmanager
def s3_server(bucket: str) -> Iterator[S3Server]:
    moto_server = pytest.importorskip("moto.server", reason="needs moto[s3,server] (test extra)")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        assert host == "127.0.0.1"
        filesystem = pafs.S3FileSystem(
            access_key="testing",
            secret_key="testing",
            endpoint_override=f"{host}:{port}",
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        )
        filesystem.create_dir(bucket)
        yield S3Server(
            server,
            bucket,
            filesystem,
            f"http://{host}:{port}",
            f"endpoint_override={host}:{port}&scheme=http&region=us-east-1",
        )
    finally:
        server.stop()
