"""Real service processes for the fault tests: a private redis-server, workers, the web app.

Each process is started as a user starts it (``arq service.WorkerSettings``, ``python -m web``,
``redis-server``), writes its output to a file (never a pipe nobody reads, which would block
it), and is killed by its own pid when the test ends.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import redis as redis_py

from tests.conftest import ping_answered

ROOT = Path(__file__).resolve().parents[2]


class Process:
    """One child process whose output goes to ``log``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None

    async def start(self) -> Process:
        """Start it; opening the log and forking happen in a thread, off the test's loop."""

        def popen() -> subprocess.Popen[bytes]:
            with self.log.open("ab") as out:
                return subprocess.Popen(
                    self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
                )

        self.popen = await asyncio.to_thread(popen)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: signal.Signals) -> None:
        assert self.popen is not None
        self.popen.send_signal(signum)

    async def wait(self, within: float) -> int:
        """The exit code; fails the test if the process is still running after ``within`` s."""
        assert self.popen is not None
        try:
            return await asyncio.to_thread(self.popen.wait, within)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {within} s") from None

    async def kill(self) -> None:
        """SIGKILL: no clean-up, no goodbye, as when the machine or the OOM killer takes it."""
        if self.running():
            self.signal(signal.SIGKILL)
        if self.popen is not None:
            await self.wait(30)

    async def output(self) -> str:
        return await asyncio.to_thread(self._output)

    def _output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class RedisServer:
    """A private redis-server on ``port`` that keeps its data across restarts (AOF, fsync
    always), as a production Redis must for "nothing accepted is lost" to survive a restart;
    ``options`` are more redis-server options (``--replicaof``, ``--maxmemory-policy``...);
    ``host`` is the address it listens on (loopback, or a test host's address in a network
    namespace: tests/netns.py); ``password``, when given, is required of its clients
    (``requirepass``) and given to its master when it is a replica (``masterauth``)."""

    def __init__(
        self,
        binary: str,
        port: int,
        folder: Path,
        *options: str,
        host: str = "127.0.0.1",
        password: str | None = None,
    ) -> None:
        self.port = port
        self.folder = folder
        self.host = host
        self.password = password
        login = ("--requirepass", password, "--masterauth", password) if password else ()
        argv = [
            binary,
            "--port", str(port),
            "--bind", host,
            "--dir", str(folder),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            # without a password Redis answers loopback only; a test host's address is on a
            # network that only the test's own namespaces share
            "--protected-mode", "yes" if host == "127.0.0.1" else "no",
            *login,
            *options,
        ]  # fmt: skip
        self.process = Process(f"redis:{port}", argv, dict(os.environ), folder / "redis.log")

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def answers(self) -> bool:
        return ping_answered(
            redis_py.Redis(
                host=self.host,
                port=self.port,
                password=self.password,
                socket_connect_timeout=0.2,
                socket_timeout=0.5,
            )
        )

    async def start(self) -> None:
        await asyncio.to_thread(self.folder.mkdir, parents=True, exist_ok=True)
        await self.process.start()
        deadline = asyncio.get_running_loop().time() + 10
        while not await asyncio.to_thread(self.answers):
            if not self.process.running() or asyncio.get_running_loop().time() > deadline:
                raise AssertionError("redis-server did not start:\n" + await self.process.output())
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Kill it outright; with fsync always, nothing it acknowledged is lost."""
        await self.process.kill()


def python(*args: str) -> list[str]:
    return [sys.executable, *args]
