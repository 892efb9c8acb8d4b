"""Priorities (service.engine.queues): where a job waits, the order the claim takes them in,
the ageing rule, the API's ``priority``, and a high job overtaking 5,000 low ones."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from jobs.registry import REGISTRY
from service.engine.arq_api import job_key_prefix, serialize_job, timestamp_ms
from service.engine.claim import claim
from service.engine.loop import BatchWorker as Worker
from service.engine.queues import Priority, ageing_offsets, queue_key
from service.queue.enqueue import enqueue, enqueue_job
from service.store import keys
from service.store.serialization import serialize
from service.worker.options import worker_options
from settings import Settings
from tests.conftest import SmtpRecorder, queued, status_of
from tests.waiting import wait_until

LOW_BACKLOG = 5_000
MAX_JOBS = 5
AGEING_MS = 10_000


async def _claim_order(redis: ArqRedis, settings: Settings, now_ms: int) -> list[str]:
    jobs, _ = await claim(
        redis,
        ageing_offsets(["default"], settings.queue_name, AGEING_MS),
        pause_flag=keys.paused(settings.queue_name),
        now_ms=now_ms,
        count=10,
        lock_ms=5_000,
        scan=100,
    )
    return [job.job_id for job in jobs]


async def _queued_at(redis: ArqRedis, priority: Priority, due_ms: int) -> str:
    """A no-op job of ``priority`` that became due at ``due_ms`` (the claim's order key)."""
    job_id = await enqueue(redis, "log_event", {"event": {"p": priority}}, priority=priority)
    key = queue_key(redis.default_queue_name, "default", priority)
    await redis.zadd(key, {job_id: due_ms})
    return job_id


def test_the_default_queues_normal_jobs_stay_in_arqs_own_key() -> None:
    assert queue_key("arq:queue", "default", "normal") == "arq:queue"
    assert queue_key("arq:queue", "default", "high") == "arq:queue:high"
    assert queue_key("arq:queue", "images", "normal") == "arq:queue:images"
    assert queue_key("arq:queue", "images", "low") == "arq:queue:images:low"


async def test_a_claim_takes_higher_priority_first_then_the_oldest(
    redis: ArqRedis, settings: Settings
) -> None:
    now = timestamp_ms()
    low = await _queued_at(redis, "low", now - 3_000)
    normal_old = await _queued_at(redis, "normal", now - 2_000)
    normal_new = await _queued_at(redis, "normal", now - 1_000)
    high = await _queued_at(redis, "high", now - 500)
    assert await _claim_order(redis, settings, now) == [high, normal_old, normal_new, low]


async def test_a_job_waiting_one_ageing_step_longer_counts_one_level_higher(
    redis: ArqRedis, settings: Settings
) -> None:
    """No starvation: a low job due more than two steps before a high one goes first, one
    due less than that waits behind it."""
    now = timestamp_ms()
    old_low = await _queued_at(redis, "low", now - 2 * AGEING_MS - 1_000)
    high = await _queued_at(redis, "high", now - 500)
    young_low = await _queued_at(redis, "low", now - 2 * AGEING_MS + 1_000)
    normal = await _queued_at(redis, "normal", now - AGEING_MS - 800)
    assert await _claim_order(redis, settings, now) == [old_low, normal, high, young_low]


async def test_priority_is_a_query_parameter_on_every_route_and_a_field_of_post_jobs(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    email = {"to": "ann@example.com", "subject": "Hi", "body": "Hi"}
    high = await client.post("/send-email", params={"priority": "high"}, json=email)
    assert high.status == 202, await high.text()
    low = await client.post(
        "/jobs", json={"function": "log_event", "kwargs": {"event": "x"}, "priority": "low"}
    )
    assert low.status == 202, await low.text()
    plain = await client.post("/events", json={"event": "y"})
    assert plain.status == 202
    base = settings.queue_name
    assert await redis.zrange(f"{base}:high", 0, -1) == [(await high.json())["task_id"].encode()]
    assert await redis.zrange(f"{base}:low", 0, -1) == [(await low.json())["task_id"].encode()]
    assert await redis.zrange(base, 0, -1) == [(await plain.json())["task_id"].encode()]
    status = await status_of(client, (await high.json())["task_id"])
    assert status["status"] == "PENDING"


async def test_an_unknown_priority_is_a_400_that_queues_nothing(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    email = {"to": "ann@example.com", "subject": "Hi", "body": "Hi"}
    refusals = [
        await client.post("/send-email", params={"priority": "urgent"}, json=email),
        await client.post("/send-email?priority=high&priority=low", json=email),
        await client.post("/events", params={"priority": "HIGH"}, json={"event": "x"}),
        await client.post(
            "/jobs", json={"function": "log_event", "kwargs": {"event": "x"}, "priority": "top"}
        ),
        await client.post(
            "/jobs?priority=low",
            json={"function": "log_event", "kwargs": {"event": "x"}, "priority": "high"},
        ),
        await client.post(
            "/register", params={"priority": "soon"}, json={"name": "Ann", "email": "a@b.example"}
        ),
    ]
    for response in refusals:
        assert response.status == 400, await response.text()
        assert "priority" in (await response.json())["error"]
    assert await queued(redis, settings) == []
    again = await client.post("/register", json={"name": "Ann", "email": "a@b.example"})
    assert again.status == 201, "the refused sign-up created no user"


async def _fill_low(redis: ArqRedis, settings: Settings, count: int) -> list[str]:
    """``count`` low-priority emails stored as the enqueue script stores them, pipelined."""
    ids = [uuid.uuid4().hex for _ in range(count)]
    low = queue_key(settings.queue_name, "default", "low")
    now = timestamp_ms()
    async with redis.pipeline(transaction=False) as pipe:
        for n, job_id in enumerate(ids):
            kwargs = {"to": f"low{n}@example.com", "subject": f"low {n}", "body": "newsletter"}
            payload = serialize_job("send_email", (), kwargs, None, now, serializer=serialize)
            pipe.psetex(job_key_prefix + job_id, 3_600_000, payload)
            pipe.zadd(low, {job_id: now - count + n})  # oldest first, all due already
        await pipe.execute()
    return ids


async def test_a_high_priority_email_overtakes_5000_low_ones_in_the_next_claim(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    smtp_server: SmtpRecorder,
) -> None:
    """The worker is busy with a 5,000-email low-priority backlog; a high-priority email
    queued then starts in the next claim: at most one batch of low emails (those a claim
    already in flight took, MAX_JOBS) is sent between its queueing and its own delivery, where
    arriving last it would wait for thousands."""
    await _fill_low(redis, settings, LOW_BACKLOG)
    options = worker_options(settings.model_copy(update={"worker_max_jobs": MAX_JOBS}))
    options.update(handle_signals=False)
    worker = Worker(**options)
    running = asyncio.create_task(worker.main())

    async def some_sent() -> bool:
        return len(smtp_server.messages) >= 20

    async def reset_sent() -> bool:
        return any(m.message["Subject"] == "Password reset" for m in smtp_server.messages)

    try:
        await wait_until(some_sent, within=60)
        email = {"to": "reset@example.com", "subject": "Password reset", "body": "now"}
        response = await client.post("/send-email", params={"priority": "high"}, json=email)
        assert response.status == 202
        sent_before = len(smtp_server.messages)
        await wait_until(reset_sent, within=30)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await worker.close()
    subjects = [m.message["Subject"] for m in smtp_server.messages]
    position = subjects.index("Password reset")
    # low emails delivered after it was queued and before it: only those already running or
    # taken by a claim in flight (each up to MAX_JOBS), never the backlog's thousands
    assert position - sent_before <= 2 * MAX_JOBS, subjects[sent_before : position + 1]
    assert position < 500
    waiting_low = await redis.zcard(queue_key(settings.queue_name, "default", "low"))
    assert waiting_low > LOW_BACKLOG - 1_000, "most of the backlog was still waiting"


async def test_a_declared_priority_is_the_default_and_a_retry_keeps_the_declared_queue(
    redis: ArqRedis, settings: Settings
) -> None:
    layout = REGISTRY.layout(settings)
    assert layout.route("process_image") == ("images", "normal")
    assert layout.route("process_image", "high") == ("images", "high")
    assert layout.route("send_email") == ("default", "normal")
    assert layout.queues == ("default", "images")
    assert await enqueue_job(
        redis, "log_event", "j1", {"event": "x"}, queue="images", priority="low"
    )
    assert await redis.zrange("arq:queue:images:low", 0, -1) == [b"j1"]
