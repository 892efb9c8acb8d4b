"""The contract with stock arq clients: code that knows only arq's documented API.

A job queued by arq's own ``ArqRedis.enqueue_job`` (from ``arq.connections.create_pool`` with
the service's serializer and queue name) runs on the service's worker, and arq's own
``Job.status()`` and ``Job.result()`` agree with ``GET /task-status/{id}`` in every state a
job passes through. arq has fewer states than the API, so one arq state may stand for
several of ours (:data:`OURS_FOR_ARQ`); each test asserts which.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis, create_pool
from arq.jobs import Job, JobStatus

from service.engine.loop import BatchWorker as Worker
from service.records.status import TaskState
from service.records.times import iso_from_ms
from service.store import keys
from service.store.serialization import JobError, deserialize, serialize
from service.worker.options import worker_options
from settings import Settings
from tests.conftest import RunWorker, status_of
from tests.waiting import wait_until
from tests.webhook_targets import HeldTarget, ServerFactory, hook_url

# What our status says for each of arq's: arq knows no retries, failures or cancellations.
OURS_FOR_ARQ: dict[JobStatus, frozenset[TaskState]] = {
    JobStatus.queued: frozenset({TaskState.PENDING, TaskState.RETRY}),  # due now
    JobStatus.deferred: frozenset({TaskState.PENDING, TaskState.RETRY}),  # due later
    JobStatus.in_progress: frozenset({TaskState.STARTED}),
    # result() returns for SUCCESS, raises the job's error for the other two
    JobStatus.complete: frozenset({TaskState.SUCCESS, TaskState.FAILURE, TaskState.CANCELLED}),
}
PAYLOAD = {"order": 7}
WEBHOOK_RESULT_KEYS = {"status", "attempts", "elapsed_ms"}


@pytest.fixture
async def arq_client(settings: Settings, redis: ArqRedis) -> AsyncIterator[ArqRedis]:
    """arq's own client, set up as its docs say: only the serializer and queue are ours."""
    pool = await create_pool(
        settings.redis_settings,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=settings.queue_name,
    )
    yield pool
    await pool.aclose(close_connection_pool=True)


async def _stock_enqueue(arq_client: ArqRedis, url: str, **options: Any) -> Job:
    job = await arq_client.enqueue_job("deliver_webhook", url=url, payload=PAYLOAD, **options)
    assert job is not None
    return job


async def _both(client: TestClient[Any, Any], job: Job) -> tuple[JobStatus, dict[str, Any]]:
    """arq's status of ``job`` and ours; the pair must be one OURS_FOR_ARQ allows."""
    arq_status = await job.status()
    ours = await status_of(client, job.job_id)
    assert ours["status"] in OURS_FOR_ARQ[arq_status], (arq_status, ours)
    return arq_status, ours


async def _answering(aiohttp_server: ServerFactory, status: int, **headers: str) -> str:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({}, status=status, headers=headers)

    return await hook_url(aiohttp_server, answer)


async def test_a_job_queued_by_stock_arq_runs_and_both_report_it_queued_then_succeeded(
    client: TestClient[Any, Any],
    arq_client: ArqRedis,
    run_worker: RunWorker,
    aiohttp_server: ServerFactory,
) -> None:
    job = await _stock_enqueue(arq_client, await _answering(aiohttp_server, 200))
    arq_status, ours = await _both(client, job)
    assert (arq_status, ours["status"]) == (JobStatus.queued, TaskState.PENDING)

    await run_worker()

    arq_status, ours = await _both(client, job)
    assert (arq_status, ours["status"]) == (JobStatus.complete, TaskState.SUCCESS)
    result = await job.result(timeout=0)
    assert set(result) == WEBHOOK_RESULT_KEYS
    assert result == ours["result"]
    assert ours["attempts"] == 1


async def test_a_deferred_stock_job_is_pending_with_the_same_due_time(
    client: TestClient[Any, Any], arq_client: ArqRedis, aiohttp_server: ServerFactory
) -> None:
    job = await _stock_enqueue(arq_client, await _answering(aiohttp_server, 200), _defer_by=3600)
    arq_status, ours = await _both(client, job)
    assert (arq_status, ours["status"]) == (JobStatus.deferred, TaskState.PENDING)
    assert ours["scheduled_for"] == await _due_at(job)


async def test_a_running_stock_job_is_in_progress_for_both(
    client: TestClient[Any, Any],
    arq_client: ArqRedis,
    run_worker: RunWorker,
    aiohttp_server: ServerFactory,
) -> None:
    target = HeldTarget()
    job = await _stock_enqueue(arq_client, await hook_url(aiohttp_server, target.handle))
    worker = asyncio.create_task(run_worker())
    try:
        await asyncio.wait_for(target.arrived.wait(), 10)  # its code runs
        arq_status, ours = await _both(client, job)
        assert (arq_status, ours["status"]) == (JobStatus.in_progress, TaskState.STARTED)
    finally:
        target.release.set()
        await worker

    arq_status, ours = await _both(client, job)
    assert (arq_status, ours["status"]) == (JobStatus.complete, TaskState.SUCCESS)


async def test_a_failed_stock_job_is_complete_for_arq_and_raises_our_error(
    client: TestClient[Any, Any],
    arq_client: ArqRedis,
    run_worker: RunWorker,
    aiohttp_server: ServerFactory,
) -> None:
    job = await _stock_enqueue(arq_client, await _answering(aiohttp_server, 400))
    await run_worker()

    arq_status, ours = await _both(client, job)
    assert (arq_status, ours["status"]) == (JobStatus.complete, TaskState.FAILURE)
    with pytest.raises(JobError) as raised:
        await job.result(timeout=0)
    assert raised.value.type_name == "PermanentError"
    assert str(raised.value) == ours["error"] == "PermanentError: webhook answered 400: not retried"


async def test_a_stock_job_waiting_for_its_retry_is_deferred_for_arq(
    client: TestClient[Any, Any],
    arq_client: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
    aiohttp_server: ServerFactory,
) -> None:
    # the target asks for an hour's pause, and the backoff cap allows it
    url = await _answering(aiohttp_server, 503, **{"Retry-After": "3600"})
    job = await _stock_enqueue(arq_client, url)
    await run_worker(settings.model_copy(update={"retry_backoff_max": 3600}), max_burst_jobs=1)

    arq_status, ours = await _both(client, job)
    assert (arq_status, ours["status"]) == (JobStatus.deferred, TaskState.RETRY)
    assert ours["next_attempt_at"] == await _due_at(job)
    assert ours["error"] == "webhook answered 503"


async def test_an_unknown_job_is_not_found_for_both(
    client: TestClient[Any, Any], arq_client: ArqRedis, settings: Settings
) -> None:
    job = Job("no-such-job", arq_client, _queue_name=settings.queue_name)
    assert await job.status() == JobStatus.not_found
    response = await client.get("/task-status/no-such-job")
    assert response.status == 404


async def _due_at(job: Job) -> str | None:
    """When arq says the job is due (its score in the queue), as our status writes times."""
    info = await job.info()
    assert info is not None
    assert info.score is not None
    return iso_from_ms(info.score)


@pytest.fixture
async def idle_worker(settings: Settings, redis: ArqRedis) -> AsyncIterator[Worker]:
    """The service's worker as production runs it (not in burst mode), once it is idle:
    it found nothing to do and waits on its wake list (service.engine.wakeup)."""
    worker = Worker(**worker_options(settings), handle_signals=False)
    running = asyncio.create_task(worker.async_run())
    database = str(settings.redis_settings.database)

    async def waiting_for_work() -> bool:
        clients = await redis.client_list()
        return any(c.get("cmd") == "blpop" and c.get("db") == database for c in clients)

    try:
        await wait_until(waiting_for_work)
        yield worker
    finally:
        running.cancel()
        await worker.close()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_a_stock_job_runs_on_an_idle_worker_without_a_wake_token(
    client: TestClient[Any, Any],
    arq_client: ArqRedis,
    redis: ArqRedis,
    settings: Settings,
    idle_worker: Worker,
    aiohttp_server: ServerFactory,
) -> None:
    job = await _stock_enqueue(arq_client, await _answering(aiohttp_server, 200))
    # arq's enqueue_job wakes no one: the idle worker finds the job on its next queue read
    assert await redis.llen(keys.wake(settings.queue_name)) == 0  # type: ignore[misc]

    result = await job.result(timeout=30, poll_delay=0.05)

    assert set(result) == WEBHOOK_RESULT_KEYS
    assert (await status_of(client, job.job_id))["status"] == TaskState.SUCCESS
    assert idle_worker.jobs_complete == 1
