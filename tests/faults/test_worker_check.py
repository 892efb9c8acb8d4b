"""``arq service.WorkerSettings --check`` (a container health check) answers within 10 s:
0 with a worker alive, non-zero with none, with Redis down, or with Redis not answering.

Before (service.worker.check), a check with Redis down made arq's six connection attempts,
each through the worker's retry policy: about 31 s each, minutes in all.
"""

from __future__ import annotations

import asyncio
import signal
import time

import redis as redis_py

from settings import Settings
from tests.faults.conftest import Spawn
from tests.faults.processes import RedisServer
from tests.waiting import wait_until

ANSWER_WITHIN = 10.0  # seconds, Python's start-up included
STARTUP = 30


async def _check(spawn: Spawn) -> tuple[int, float, str]:
    """Run the check as a container runtime would: its exit status, how long it took (s),
    and what it wrote."""
    started = time.monotonic()
    check = await spawn("worker", "--check")
    status = await check.wait(within=60)
    return status, time.monotonic() - started, await check.output()


async def test_check_answers_0_when_a_worker_is_alive(
    settings: Settings, redis_server: RedisServer, spawn: Spawn
) -> None:
    await spawn("worker")
    client = redis_py.Redis(port=redis_server.port)

    async def health_written() -> bool:
        return bool(await asyncio.to_thread(client.exists, settings.queue_name + ":health-check"))

    try:
        await wait_until(health_written, within=STARTUP)
    finally:
        await asyncio.to_thread(client.close)
    status, elapsed, output = await _check(spawn)
    assert status == 0, output
    assert elapsed < ANSWER_WITHIN


async def test_check_answers_non_zero_when_no_worker_is_alive(spawn: Spawn) -> None:
    status, elapsed, output = await _check(spawn)
    assert status != 0, output
    assert "no health check sentinel value found" in output
    assert elapsed < ANSWER_WITHIN


async def test_check_answers_non_zero_within_seconds_when_redis_is_down(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    await redis_server.stop()
    status, elapsed, output = await _check(spawn)
    print(f"--check with Redis down: status {status} in {elapsed:.1f} s")
    assert status != 0
    assert elapsed < ANSWER_WITHIN
    assert "Health check failed: Redis unreachable" in output


async def test_check_answers_non_zero_within_seconds_when_redis_does_not_answer(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    """SIGSTOP: Redis accepts connections and answers nothing, as behind a stalled network."""
    redis_server.process.signal(signal.SIGSTOP)
    try:
        status, elapsed, output = await _check(spawn)
    finally:
        redis_server.process.signal(signal.SIGCONT)
    assert status != 0
    assert elapsed < ANSWER_WITHIN
    assert "Health check failed: Redis did not answer" in output
