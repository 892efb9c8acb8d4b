"""Redis killed and restarted under a running web app and worker (both real processes)."""

from __future__ import annotations

import signal
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from settings import Settings
from tests.conftest import AUTH_HEADERS, SmtpRecorder
from tests.faults.conftest import Spawn
from tests.faults.processes import RedisServer
from tests.waiting import wait_until

STARTUP = 30
NO_HANG = 5  # seconds: an answer slower than this while Redis is down counts as a hang


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        f"http://127.0.0.1:{settings.web_port}",
        headers=AUTH_HEADERS,
        timeout=aiohttp.ClientTimeout(total=NO_HANG),
    ) as session:
        yield session


async def _health(http: aiohttp.ClientSession) -> int:
    try:
        async with http.get("/health") as response:
            return response.status
    except aiohttp.ClientConnectionError:
        return 0  # the web process is not listening yet


async def _post_email(http: aiohttp.ClientSession, subject: str) -> aiohttp.ClientResponse:
    email = {"to": "ann@example.com", "subject": subject, "body": "hi"}
    async with http.post("/send-email", json=email) as response:
        await response.read()
        return response


async def _status(http: aiohttp.ClientSession, task_id: str) -> dict[str, Any]:
    async with http.get(f"/task-status/{task_id}") as response:
        body: dict[str, Any] = await response.json()
        return body


async def test_worker_and_web_ride_out_a_redis_restart(
    settings: Settings,
    redis_server: RedisServer,
    smtp_server: SmtpRecorder,
    spawn: Spawn,
    http: aiohttp.ClientSession,
) -> None:
    web = await spawn("web")
    worker = await spawn("worker")

    async def web_healthy() -> bool:
        return await _health(http) == 200

    await wait_until(web_healthy, within=STARTUP)
    smtp_server.hold = threading.Event()
    before = await _post_email(http, "sent across the outage")
    assert before.status == 202
    task_before = (await before.json())["task_id"]

    async def mid_email() -> bool:
        return smtp_server.data_arrived.is_set()

    await wait_until(mid_email, within=STARTUP)

    await redis_server.stop()
    assert await _health(http) == 503  # within NO_HANG, or the client raises
    refused = await _post_email(http, "refused while Redis is down")
    assert refused.status == 503
    assert "unavailable" in (await refused.json())["error"]
    # the running job finishes its SMTP exchange, then waits for Redis to record it
    smtp_server.hold.set()

    async def delivered() -> bool:
        return len(smtp_server.messages) == 1

    await wait_until(delivered, within=10)
    await redis_server.start()

    await wait_until(web_healthy, within=10)
    after = await _post_email(http, "sent after the outage")
    assert after.status == 202
    task_after = (await after.json())["task_id"]

    async def both_done() -> bool:
        states = [(await _status(http, task))["status"] for task in (task_before, task_after)]
        return states == ["SUCCESS", "SUCCESS"]

    await wait_until(both_done, within=settings.redis_retry_seconds + 10)
    subjects = sorted(m.message["Subject"] for m in smtp_server.messages)
    assert subjects == ["sent across the outage", "sent after the outage"]
    assert worker.running(), "the worker reconnected instead of dying"
    assert web.running()
    assert (await _status(http, task_before))["attempts"] == 1


async def test_web_starts_while_redis_is_down_and_recovers_when_it_comes(
    settings: Settings, redis_server: RedisServer, spawn: Spawn, http: aiohttp.ClientSession
) -> None:
    await redis_server.stop()
    web = await spawn("web")

    async def answers_503() -> bool:
        return await _health(http) == 503

    await wait_until(answers_503, within=STARTUP)
    refused = await _post_email(http, "while Redis never was")
    assert refused.status == 503

    await redis_server.start()

    async def healthy() -> bool:
        return await _health(http) == 200

    await wait_until(healthy, within=10)
    assert (await _post_email(http, "once Redis is up")).status == 202
    assert web.running()


async def test_a_stalled_redis_gives_quick_503s_and_the_worker_carries_on(
    settings: Settings,
    redis_server: RedisServer,
    smtp_server: SmtpRecorder,
    spawn: Spawn,
    http: aiohttp.ClientSession,
) -> None:
    """SIGSTOP: Redis keeps its connections open but answers nothing, as on a network stall."""
    await spawn("web")
    worker = await spawn("worker")

    async def web_healthy() -> bool:
        return await _health(http) == 200

    await wait_until(web_healthy, within=STARTUP)
    redis_server.process.signal(signal.SIGSTOP)
    try:
        assert await _health(http) == 503  # within NO_HANG, or the client raises
        stalled = await _post_email(http, "refused while Redis stalls")
        assert stalled.status == 503
    finally:
        redis_server.process.signal(signal.SIGCONT)

    await wait_until(web_healthy, within=10)
    sent = await _post_email(http, "sent after the stall")
    assert sent.status == 202
    task_id = (await sent.json())["task_id"]

    async def done() -> bool:
        return bool((await _status(http, task_id))["status"] == "SUCCESS")

    await wait_until(done, within=STARTUP)
    assert [m.message["Subject"] for m in smtp_server.messages] == ["sent after the stall"]
    assert worker.running()


async def test_a_worker_gives_up_after_redis_retry_seconds_and_exits_non_zero(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    """Past REDIS_RETRY_SECONDS the worker stops, so its supervisor restarts it, not hangs."""
    worker = await spawn("worker", redis_retry_seconds=1)

    async def connected() -> bool:
        return "Starting worker" in await worker.output()

    await wait_until(connected, within=STARTUP)
    await redis_server.stop()
    assert await worker.wait(within=30) != 0
    assert "giving up, the worker exits with status 1" in await worker.output()
