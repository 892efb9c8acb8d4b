"""A real S3 API server on loopback for the storage tests: moto's server mode, as a subprocess.

moto answers S3's REST API over HTTP as AWS does (XML bodies, error codes, ListObjectsV2
pages and continuation tokens). With ``authenticated`` it also checks every request's
signature against an IAM user it made first, so a wrong access key or secret is refused as
S3 refuses it (InvalidAccessKeyId, SignatureDoesNotMatch). Nothing here reaches any address
but 127.0.0.1.

The set-up is synchronous (boto3, urllib) and runs in fixtures outside the event loop; async
tests reach the server through the service's own storage, or through :meth:`MotoServer.call`
in a thread.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

REGION = "us-east-1"
STARTUP_SECONDS = 30
# moto's server accepts any key while it does not check signatures
ANY_KEY = ("AKIAANYKEY0000000000", "any-secret")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str


class MotoServer:
    """``python -m moto.server`` on a free port of ``host`` (loopback, or a test host's address
    in a network namespace: tests/netns.py), its output in ``log``."""

    def __init__(self, log: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.port = port or free_port()
        self.host = host
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.keys = Keys(*ANY_KEY)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> MotoServer:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto's server did not start:\n" + self.log.read_text())
            time.sleep(0.05)  # a process starting: no event to wait on from outside it
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=1):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def require_signatures(self) -> Keys:
        """Make an IAM user allowed all of S3, then have the server check every request's
        signature: from here on only its keys open anything."""
        iam = self.client("iam")
        user = f"jobservice-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=user)
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},  # not a form: moto reads the raw body
        )
        with urllib.request.urlopen(request, timeout=5):
            pass
        self.keys = Keys(key["AccessKeyId"], key["SecretAccessKey"])
        return self.keys

    def client(self, service: str = "s3") -> Any:
        """A plain boto3 client with the server's keys: the tests' own view of the bucket,
        independent of the service's storage code."""
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id=self.keys.access_key_id,
            aws_secret_access_key=self.keys.secret_access_key,
            config=Config(s3={"addressing_style": "path"}),
        )

    def new_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys_in(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key in ``bucket`` under ``prefix``, all pages."""
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One server for the session, checking signatures; each test makes its own bucket."""
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    try:
        server.require_signatures()
        yield server
    finally:
        server.stop()
