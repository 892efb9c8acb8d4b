"""PostgreSQL for the tests: a database of the test's own on the shared server, and private
clusters a test may stop without harming anyone else.

The shared server is ``TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/
postgres``, trust auth): each test that needs it creates a uniquely named database there
and drops it when it ends, passed or failed. Without a server (or without PostgreSQL's
binaries, for private clusters) those tests are skipped, except under CI (``CI`` set, as
tests/test_browser.py does for chromium), where that is an error: .ci/run starts one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import asyncpg
import pytest

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
UNREACHABLE = (OSError, TimeoutError, asyncpg.PostgresError)


def missing(reason: str) -> NoReturn:
    """Skip the test, or fail it under CI, where PostgreSQL must be there."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: under CI this is an error (.ci/run installs and starts it)")
    pytest.skip(reason)


def with_database(url: str, name: str) -> str:
    """``url`` pointing at the database ``name`` instead."""
    return urlsplit(url)._replace(path=f"/{name}").geturl()


@asynccontextmanager
async def scratch_database(admin_url: str = ADMIN_URL) -> AsyncIterator[str]:
    """A new, empty database on the server of ``admin_url``, dropped when the block ends
    (``WITH (FORCE)``: connections a failed test left open do not keep it)."""
    name = f"jobservice_test_{uuid.uuid4().hex[:16]}"
    try:
        admin = await asyncpg.connect(admin_url, timeout=5)
    except UNREACHABLE as exc:
        missing(f"no PostgreSQL answers at {admin_url} ({type(exc).__name__}: {exc})")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(admin_url, name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _binaries() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        missing("private PostgreSQL clusters need its binaries (apt-get install postgresql)")
    return found[-1].parent


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the ``postgres`` user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


class ClusterFolder:
    """An initdb-ed data folder (made once per test session: initdb takes seconds), or with
    ``path`` one made earlier (by the test that hands it to a process of its own)."""

    def __init__(self, path: Path | None = None) -> None:
        self.bin = _binaries()
        if path is not None:
            self.path = path
            return
        # not under pytest's tmp_path: as root, that is closed to the postgres user
        self.path = Path(tempfile.mkdtemp(prefix="jobservice-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.path, "postgres", "postgres")
        initdb = [str(self.bin / "initdb"), "-D", str(self.path / "data"), "-U", "postgres"]
        options = ["--auth=trust", "--encoding=UTF8", "--no-sync", "--no-instructions"]
        subprocess.run(_as_postgres([*initdb, *options]), check=True, capture_output=True)

    def trust(self, network: str) -> None:
        """Let clients from ``network`` (e.g. ``10.213.13.0/24``) in without a password, as
        initdb's ``--auth=trust`` lets loopback in (and nothing else)."""
        with (self.path / "data" / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {network} trust\n")

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class PostgresCluster:
    """A PostgreSQL server of the test's own on ``port`` of ``host`` (127.0.0.1, or a test
    host's address in a network namespace): blocking calls, run them in a thread from a
    test's event loop."""

    def __init__(self, folder: ClusterFolder, port: int, host: str = "127.0.0.1") -> None:
        self.folder = folder
        self.port = port
        self.host = host
        self.running = False

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        data = str(self.folder.path / "data")
        command = [str(self.folder.bin / "pg_ctl"), "-D", data, "-w", *args]
        done = subprocess.run(_as_postgres(command), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise AssertionError(f"pg_ctl {args[-1]} failed:\n{done.stdout}{done.stderr}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses={self.host} -c unix_socket_directories=''"
            " -c fsync=off"
        )
        log = str(self.folder.path / "server.log")
        self._pg_ctl("-o", options, "-l", log, "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """A fast shutdown: the server ends every session and exits, as on a restart
        (``immediate``: at once, for a clean-up that must not wait on anyone)."""
        self._pg_ctl("-m", mode, "stop")
        self.running = False
