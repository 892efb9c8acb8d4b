"""The start-up checks of Redis's eviction policy and persistence (service.store.redis_checks).

Each test runs them against a redis-server of its own, set up with CONFIG SET / ACL SETUSER as
an operator would leave it. The processes refusing to start: tests/faults/test_unsafe_redis.py.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from honcho.manager import Manager
from honcho.printer import Printer
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.dev.launcher import _redis as dev_redis
from service.store.redis import open_pool
from service.store.redis_checks import EvictingRedisError, check_redis, check_redis_at_start
from settings import Settings
from tests.conftest import free_port
from tests.waiting import wait_until

PrivateRedis = tuple[str, "subprocess.Popen[bytes]"]


@pytest.fixture
async def server(private_redis: PrivateRedis) -> AsyncIterator[Redis]:
    """An admin client of the test's own redis-server (no save points, no AOF to start with)."""
    url, _ = private_redis
    client = Redis.from_url(url, socket_timeout=2)

    async def answers() -> bool:
        try:
            return bool(await client.ping())
        except (RedisError, OSError):
            return False

    await wait_until(answers, within=10)
    yield client
    await client.aclose()


async def _settings(url: str, tmp_path: Path, **overrides: object) -> Settings:
    """Settings, built off the loop (reading the time-zone database is file I/O)."""
    return await asyncio.to_thread(
        lambda: Settings(redis_url=url, data_dir=tmp_path, **overrides)  # type: ignore[arg-type]
    )


async def _check(url: str, settings: Settings) -> None:
    pool = await open_pool(settings)
    try:
        await check_redis(pool, settings, "worker")
    finally:
        await pool.aclose(close_connection_pool=True)


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
async def test_an_evicting_redis_stops_the_start(
    server: Redis,
    private_redis: PrivateRedis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    policy: str,
) -> None:
    """volatile-* too: arq's job keys carry a TTL, so they are among the keys it may drop."""
    url, _ = private_redis
    await server.config_set("maxmemory-policy", policy)
    with pytest.raises(EvictingRedisError) as refused:
        await _check(url, await _settings(url, tmp_path))
    assert refused.value.code == 1
    [error] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert f"maxmemory-policy is '{policy}'" in error.getMessage()
    assert "REDIS_ALLOW_EVICTION=true" in error.getMessage()
    assert "refusing to start" in error.getMessage()


async def test_eviction_allowed_is_a_warning(
    server: Redis, private_redis: PrivateRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = private_redis
    await server.config_set("maxmemory-policy", "allkeys-lru")
    await _check(url, await _settings(url, tmp_path, redis_allow_eviction=True))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("REDIS_ALLOW_EVICTION is on" in message for message in warnings)


@pytest.mark.parametrize(
    ("appendonly", "save", "ephemeral", "warned"),
    [
        ("no", "", False, True),  # persists nothing
        ("no", "", True, False),  # on purpose
        ("yes", "", False, False),  # AOF
        ("no", "3600 1", False, False),  # RDB snapshots
    ],
)
async def test_a_redis_that_persists_nothing_is_a_warning(
    server: Redis,
    private_redis: PrivateRedis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    appendonly: str,
    save: str,
    ephemeral: bool,
    warned: bool,
) -> None:
    url, _ = private_redis
    await server.config_set("appendonly", appendonly)
    await server.config_set("save", save)
    await _check(url, await _settings(url, tmp_path, redis_ephemeral=ephemeral))
    persistence = [r for r in caplog.records if "persists nothing" in r.getMessage()]
    assert [r.levelname for r in persistence] == (["WARNING"] if warned else [])


async def test_without_config_get_the_checks_are_skipped_and_said_so(
    server: Redis, private_redis: PrivateRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A managed Redis or an ACL user without CONFIG: the start goes on, with a warning, even
    where the check, could it be made, would stop it."""
    url, _ = private_redis
    await server.config_set("maxmemory-policy", "allkeys-lru")
    await server.acl_setuser(
        "jobs", enabled=True, passwords=["+jobs-secret"], keys=["*"], channels=["*"],
        commands=["+@all", "-config"],
    )  # fmt: skip
    limited = url.replace("redis://", "redis://jobs:jobs-secret@")
    await _check(limited, await _settings(limited, tmp_path))
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "could not read Redis's configuration" in warning
    assert "no permissions to run the 'config|get' command" in warning


async def test_the_web_app_starts_when_redis_does_not_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It serves 503s until Redis is back (tests/faults/test_redis_restart.py); the check is
    left to the worker, which waits for Redis as it starts."""
    await check_redis_at_start(await _settings(f"redis://127.0.0.1:{free_port()}/0", tmp_path))
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "Redis did not answer at start" in warning


async def test_make_dev_starts_its_own_redis_only_when_none_answers(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """A redis-server of its own (with an append-only file: tests/test_dev_redis.py) when
    nothing answers at REDIS_URL, and none beside a Redis that answers."""
    manager = Manager(Printer(io.StringIO()))
    nobody = await _settings(f"redis://127.0.0.1:{free_port()}/0", tmp_path)
    await asyncio.to_thread(dev_redis, nobody, manager)
    assert "redis" in manager._processes
    url, _ = private_redis
    answering = Manager(Printer(io.StringIO()))
    await asyncio.to_thread(dev_redis, await _settings(url, tmp_path), answering)
    assert "redis" not in answering._processes
