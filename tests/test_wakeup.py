"""Waking an idle worker on enqueue (engine.wakeup) and the one-call enqueue (queue.enqueue)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.engine.loop import BatchWorker as Worker
from service.engine.wakeup import WakingRedis
from service.queue.enqueue import enqueue, enqueue_job
from service.store import keys
from service.worker.options import worker_options
from settings import Settings
from tests.conftest import SmtpRecorder, queued, status_of
from tests.waiting import wait_until

EMAIL = {"to": "ann@example.com", "subject": "Hi", "body": "Hello"}
# Far longer than any wait below: a job started in time was started by a wake-up, not a poll.
NEVER = 60.0

StartWorker = Callable[..., Worker]


@pytest.fixture
async def sleepy_worker(settings: Settings) -> AsyncIterator[StartWorker]:
    """Start a long-running worker that re-reads its queue only when woken (or after 60 s)."""
    started: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(**overrides: Any) -> Worker:
        options = worker_options(settings)
        pool: WakingRedis = options["redis_pool"]
        pool.idle_wait = pool.busy_wait = NEVER
        options.update(poll_delay=NEVER, handle_signals=False, **overrides)
        worker = Worker(**options)
        started.append((worker, asyncio.create_task(worker.async_run())))
        return worker

    yield start
    for worker, task in started:
        task.cancel()
        await worker.close()


async def _worker_waiting(redis: ArqRedis) -> bool:
    clients = await redis.client_list()
    return any(client.get("cmd") == "blpop" for client in clients)


async def test_an_idle_worker_starts_a_queued_job_when_woken(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    sleepy_worker: StartWorker,
    smtp_server: SmtpRecorder,
) -> None:
    sleepy_worker()
    await wait_until(lambda: _worker_waiting(redis))

    task_id = (await (await client.post("/send-email", json=EMAIL)).json())["task_id"]

    async def sent() -> bool:
        status: str = (await status_of(client, task_id))["status"]
        return status == "SUCCESS"

    await wait_until(sent, within=10)
    assert len(smtp_server.messages) == 1


async def test_an_idle_worker_wakes_for_a_deferred_job_when_it_is_due(
    redis: ArqRedis, settings: Settings, sleepy_worker: StartWorker
) -> None:
    # arq's own enqueue pushes no wake token: only the job's due time can end the wait
    job = await redis.enqueue_job("log_event", event={"a": 1}, _defer_by=0.3)
    assert job is not None
    sleepy_worker()

    async def done() -> bool:
        return await queued(redis, settings) == []

    await wait_until(done, within=10)
    assert (await job.result_info()) is None  # log_event keeps no result, but it ran
    outcome = await redis.hget(keys.job_meta(job.job_id), "outcome")  # type: ignore[misc]
    assert outcome == b"success"


async def test_enqueue_keeps_at_most_one_wake_token(redis: ArqRedis, settings: Settings) -> None:
    for n in range(5):
        await enqueue(redis, "log_event", {"event": {"n": n}})
    assert len(await queued(redis, settings)) == 5
    assert await redis.llen(keys.wake(settings.queue_name)) == 1  # type: ignore[misc]


async def test_enqueue_refuses_an_existing_job_id(redis: ArqRedis, settings: Settings) -> None:
    assert await enqueue_job(redis, "log_event", "fixed-id", {"event": {"n": 1}})
    assert not await enqueue_job(redis, "log_event", "fixed-id", {"event": {"n": 2}})
    assert await queued(redis, settings) == ["fixed-id"]
    [job] = await redis.queued_jobs()  # arq's own reading of the stored job
    assert job.kwargs == {"event": {"n": 1}}
    assert job.function == "log_event"
