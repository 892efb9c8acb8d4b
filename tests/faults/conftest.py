"""Fixtures for the fault tests: each test owns a redis-server and starts real service processes.

The settings use small timeouts so that every fault resolves in seconds, and a long JOB_TIMEOUT
(300 s) so that arq's own in-progress lock (longest function timeout + 10 s) would be far
longer than the per-function bound the tests rely on.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from settings import Settings
from tests.conftest import TEST_API_TOKEN, SmtpRecorder, free_port
from tests.faults.processes import Process, RedisServer, python
from tests.faults.sentinels import SentinelGroup
from tests.waiting import wait_until

Spawn = Callable[..., Awaitable[Process]]


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    binary = await asyncio.to_thread(shutil.which, "redis-server")
    if binary is None:
        pytest.skip("the fault tests need redis-server (apt-get install redis-server)")
    server = RedisServer(binary, free_port(), tmp_path / "redis")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def sentinel_group(tmp_path: Path) -> AsyncIterator[SentinelGroup]:
    """A master, a replica and three sentinels (tests/faults/sentinels.py), all stopped after."""
    async with running_sentinels(tmp_path) as group:
        yield group


@contextlib.asynccontextmanager
async def running_sentinels(
    tmp_path: Path, *, password: str | None = None, sentinel_password: str | None = None
) -> AsyncIterator[SentinelGroup]:
    """A started SentinelGroup (the servers' and the sentinels' own passwords, if given),
    stopped on the way out; the test is skipped where redis-server is not installed."""
    binary = await asyncio.to_thread(shutil.which, "redis-server")
    if binary is None:
        pytest.skip("the Sentinel tests need redis-server (apt-get install redis-server)")
    group = SentinelGroup(
        binary,
        tmp_path / "sentinel-group",
        password=password,
        sentinel_password=sentinel_password,
    )
    try:
        await group.start()
        yield group
    finally:
        await group.stop()


@pytest.fixture
def settings(tmp_path: Path, smtp_server: SmtpRecorder, redis_server: RedisServer) -> Settings:
    return Settings(
        redis_url=redis_server.url(),
        data_dir=tmp_path / "data",
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        smtp_timeout=2,
        email_job_timeout=4,
        webhook_timeout=1,
        webhook_job_timeout=3,
        image_job_timeout=10,
        job_timeout=300,
        job_lock_margin=1,
        worker_shutdown_grace=5,
        job_max_tries=4,
        retry_backoff_base=0.05,
        retry_backoff_max=0.3,
        redis_retry_seconds=20,
        redis_socket_timeout=1,
        api_tokens=(TEST_API_TOKEN,),
        webhook_allowed_hosts=("127.0.0.1",),
        web_port=free_port(),
        # no catch-up of missed cron runs unless a test asks for it: a worker started just
        # after 00:00 or 02:00 would otherwise queue a report or a cleanup mid-test
        cron_catch_up=0,
    )


def _env_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def service_env(settings: Settings, **overrides: Any) -> dict[str, str]:
    """The environment that makes a child process load exactly ``settings`` (plus overrides)."""
    import os

    names = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in names}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[name.upper()] = _env_value(value)
    env.update({key.upper(): _env_value(value) for key, value in overrides.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
async def spawn(settings: Settings, tmp_path: Path) -> AsyncIterator[Spawn]:
    """Start ``worker``, ``web`` or ``cron-worker`` processes (``args`` follow the command);
    every one left running is SIGKILLed at the end and its output printed."""
    started: list[Process] = []
    commands = {
        "worker": python("-m", "arq", "service.WorkerSettings"),
        "web": python("-m", "web"),
        "cron-worker": python("-m", "tests.faults.due_cron_worker"),
        "catch-up-worker": python("-m", "tests.faults.catch_up_worker"),
    }

    async def start(kind: str, *args: str, **overrides: Any) -> Process:
        name = f"{kind}{len(started) + 1}"
        argv = [*commands[kind], *args]
        process = Process(name, argv, service_env(settings, **overrides), tmp_path / f"{name}.log")
        started.append(await process.start())
        return process

    yield start
    for process in started:
        await process.kill()
        output = await process.output()
        print(f"----- {process.name} (pid {process.pid}) output -----\n{output}")


async def web_answers(port: int, *, within: float = 30) -> None:
    """Wait until ``python -m web`` on ``port`` answers /health with 200 (a process just
    started may take seconds to import and connect on a busy machine)."""
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:

        async def up() -> bool:
            try:
                async with http.get("/health") as response:
                    return response.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_until(up, within=within, interval=0.1)
