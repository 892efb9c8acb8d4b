"""`make dev`'s private Redis (service/dev/launcher.py) keeps the queue across a restart.

The launcher's own command is started, as honcho would, on a free port; jobs are queued;
it is stopped as Ctrl-C stops it; the same command started again must still hold them.
"""

from __future__ import annotations

import asyncio
import io
import shlex
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from arq.connections import ArqRedis
from arq.constants import job_key_prefix
from honcho.manager import Manager
from honcho.printer import Printer
from redis.exceptions import RedisError

from service.dev.launcher import _redis as dev_redis
from service.queue.enqueue import enqueue
from service.store.redis import open_pool
from service.store.redis_checks import check_redis
from settings import Settings
from tests.conftest import free_port
from tests.waiting import wait_until

HOUR_MS = 3_600_000


@asynccontextmanager
async def _running(command: list[str], settings: Settings) -> AsyncIterator[ArqRedis]:
    """The command's redis-server, answering, and a pool on it; stopped as Ctrl-C stops it."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    pool: ArqRedis | None = None
    try:
        pool = await open_pool(settings)

        async def answers() -> bool:
            assert pool is not None
            try:
                return bool(await pool.ping())
            except (RedisError, OSError):
                return False

        await wait_until(answers, within=10)
        yield pool
    finally:
        if pool is not None:
            await pool.aclose(close_connection_pool=True)
        if process.returncode is None:
            process.send_signal(signal.SIGINT)  # what Ctrl-C sends the whole process group
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
                raise


async def test_make_dev_resumes_queued_and_deferred_jobs_after_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    settings = await asyncio.to_thread(lambda: Settings(redis_url=url, data_dir=tmp_path / "data"))
    await asyncio.to_thread(settings.data_dir.mkdir)  # as the launcher's main() does first
    manager = Manager(Printer(io.StringIO()))
    await asyncio.to_thread(dev_redis, settings, manager)  # none answers: make dev's own
    command = shlex.split(manager._processes["redis"]["obj"].cmd)

    run_at_ms = int(time.time() * 1000) + HOUR_MS
    async with _running(command, settings) as redis:
        await check_redis(redis, settings, "worker")
        deferred = await enqueue(redis, "log_event", {"event": "later"}, run_at_ms=run_at_ms)
        waiting = await enqueue(redis, "log_event", {"event": "now"})

    async with _running(command, settings) as redis:
        queue = dict(await redis.zrange(settings.queue_name, 0, -1, withscores=True))
        assert set(queue) == {deferred.encode(), waiting.encode()}
        assert queue[deferred.encode()] == run_at_ms, "still deferred until its time"
        for job_id in (deferred, waiting):
            assert await redis.exists(job_key_prefix + job_id)
    assert not [r for r in caplog.records if "persists nothing" in r.getMessage()], (
        "the start-up check has nothing to warn about: the private Redis keeps an AOF"
    )
    assert await asyncio.to_thread((tmp_path / "data" / "redis" / "appendonlydir").is_dir)
