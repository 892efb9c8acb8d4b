"""Pausing, resuming and draining the queue: the claim, the API, /health, /metrics, the dashboard.

Real Redis, a real worker in this process, a real webhook target holding a job "running".
Worker processes, restarts and cron while paused are in tests/faults/test_pause_workers.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from arq.utils import timestamp_ms
from pytest_aiohttp import AiohttpServer

from service.engine.claim import claim, single_queue
from service.engine.loop import BatchWorker as Worker
from service.queue.enqueue import enqueue
from service.store import keys
from settings import Settings
from tests.conftest import ClientFactory, background_worker, queued, status_of
from tests.dashboard_client import Dashboard
from tests.scraping import sample
from tests.waiting import wait_until
from tests.webhook_targets import HeldTarget, hook_url, queue_webhook
from web import create_app


@pytest.fixture
async def worker(settings: Settings, redis: ArqRedis) -> AsyncIterator[Worker]:
    """A real worker waiting for work for the whole test, as in production (not burst)."""
    async with background_worker(settings) as running:
        yield running


async def _claimed(redis: ArqRedis, settings: Settings) -> list[str]:
    jobs, _ = await claim(
        redis,
        **single_queue(settings.queue_name),
        now_ms=timestamp_ms(),
        count=10,
        lock_ms=5000,
        scan=100,
    )
    return [job.job_id for job in jobs]


async def _state(client: TestClient[Any, Any], task_id: str) -> str:
    return str((await status_of(client, task_id))["status"])


async def test_a_claim_takes_nothing_while_the_queue_is_paused(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    job_id = await enqueue(redis, "log_event", {"event": {"n": 1}})
    assert (await client.post("/queue/pause")).status == 200
    assert await _claimed(redis, settings) == []
    assert (await client.post("/queue/resume")).status == 200
    assert await _claimed(redis, settings) == [job_id]


async def test_pause_and_resume_through_the_api_health_and_metrics(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    health = await (await client.get("/health")).json()
    assert (health["paused"], health["paused_at"]) == (False, None)
    assert sample(await (await client.get("/metrics")).text(), "jobservice_queue_paused") == 0

    before = datetime.now().astimezone()
    response = await client.post("/queue/pause")
    assert response.status == 200
    paused = await response.json()
    assert paused["paused"] is True
    assert paused["running"] == 0
    assert datetime.fromisoformat(paused["paused_at"]).timestamp() >= before.timestamp() - 1
    again = await (await client.post("/queue/pause")).json()
    assert again["paused_at"] == paused["paused_at"], "a second pause keeps the first's time"

    enqueued = await client.post("/events", json={"event": {"n": 1}})
    assert enqueued.status == 202, "enqueues are still accepted while paused"
    task_id = (await enqueued.json())["task_id"]
    assert await queued(redis, settings) == [task_id]
    health = await (await client.get("/health")).json()
    assert (health["paused"], health["paused_at"]) == (True, paused["paused_at"])
    assert sample(await (await client.get("/metrics")).text(), "jobservice_queue_paused") == 1
    state = await (await client.get("/queue")).json()
    assert state == {**paused, "queued": 1}

    resumed = await client.post("/queue/resume")
    assert resumed.status == 200
    assert (await resumed.json())["paused"] is False
    assert await redis.llen(keys.wake(settings.queue_name)) == 1, "resume wakes a worker"  # type: ignore[misc]
    health = await (await client.get("/health")).json()
    assert health["paused"] is False
    assert sample(await (await client.get("/metrics")).text(), "jobservice_queue_paused") == 0


async def test_queue_routes_need_the_api_token_and_change_nothing_without_it(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    anonymous = await aiohttp_client(create_app(settings))
    for path in ("/queue/pause", "/queue/drain", "/queue/resume"):
        response = await anonymous.post(path)
        assert response.status == 401
    assert not await redis.exists(keys.paused(settings.queue_name))
    await redis.set(keys.paused(settings.queue_name), timestamp_ms())
    assert (await anonymous.post("/queue/resume")).status == 401
    assert await redis.exists(keys.paused(settings.queue_name)), "still paused"


@pytest.mark.parametrize("given", ["-1", "121", "1.5", "soon", "²"])
async def test_a_bad_drain_timeout_is_400_and_does_not_pause(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, given: str
) -> None:
    response = await client.post("/queue/drain", params={"timeout": given})
    assert response.status == 400
    assert "timeout must be" in (await response.json())["error"]
    assert not await redis.exists(keys.paused(settings.queue_name))


async def test_a_repeated_drain_timeout_is_400_and_does_not_pause(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    """Found by schemathesis: which of two timeouts counts is a guess, so neither does."""
    response = await client.post("/queue/drain", params=[("timeout", "1"), ("timeout", "2")])
    assert response.status == 400
    assert "once" in (await response.json())["error"]
    assert not await redis.exists(keys.paused(settings.queue_name))


async def test_drain_waits_for_the_running_job_and_the_paused_one_waits_for_resume(
    client: TestClient[Any, Any], aiohttp_server: AiohttpServer, worker: Worker
) -> None:
    target = HeldTarget()
    running = await queue_webhook(client, await hook_url(aiohttp_server, target.handle), {"n": 1})
    await asyncio.wait_for(target.arrived.wait(), 10)

    first = await client.post("/queue/drain", params={"timeout": "0"})
    assert first.status == 202, "a job still runs: call again"
    body = await first.json()
    assert (body["paused"], body["running"], body["drained"]) == (True, 1, False)

    waiting = await queue_webhook(client, await hook_url(aiohttp_server, target.handle), {"n": 2})
    target.release.set()
    drained = await client.post("/queue/drain", params={"timeout": "20"})
    assert drained.status == 200
    body = await drained.json()
    assert (body["paused"], body["running"], body["drained"]) == (True, 0, True)
    assert await _state(client, running) == "SUCCESS", "the running job finished"
    assert await _state(client, waiting) == "PENDING"
    assert target.finished == 1

    assert (await client.post("/queue/resume")).status == 200

    async def ran() -> bool:
        return await _state(client, waiting) == "SUCCESS"

    await wait_until(ran, within=10)
    assert target.finished == 2


async def test_the_overview_shows_the_pause_banner_and_its_buttons_need_csrf(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    board = Dashboard(await aiohttp_client(create_app(settings)))
    assert (await board.sign_in()).status == 303
    page = await board.page("/dashboard")
    assert 'action="/dashboard/queue/pause"' in page
    assert "paused-banner" not in page

    refused = await board.post("/dashboard/queue/pause", csrf=False)
    assert refused.status == 403
    foreign = await board.post("/dashboard/queue/pause", headers={"Origin": "https://evil.test"})
    assert foreign.status == 403
    assert not await redis.exists(keys.paused(settings.queue_name))

    response = await board.post("/dashboard/queue/pause")
    assert (response.status, response.headers["Location"]) == (303, "/dashboard")
    page = await board.page("/dashboard")
    assert 'id="paused-banner"' in page
    assert "Nothing is running: safe to stop the workers." in page
    assert 'action="/dashboard/queue/pause"' not in page

    assert (await board.post("/dashboard/queue/resume", csrf=False)).status == 403
    assert await redis.exists(keys.paused(settings.queue_name))
    assert (await board.post("/dashboard/queue/resume")).status == 303
    page = await board.page("/dashboard")
    assert "paused-banner" not in page
    assert not await redis.exists(keys.paused(settings.queue_name))
