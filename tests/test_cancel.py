"""DELETE /jobs/{id}: a queued job never runs, a running one is aborted, finished ones stay."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.queue.cancel import CancelOutcome, JobFinishedError, JobNotFoundError, cancel_job
from settings import Settings
from tests.conftest import RunWorker, SmtpRecorder, accepted_task, queued, status_of
from tests.webhook_targets import HeldTarget, ServerFactory, hook_url, queue_webhook

EMAIL: dict[str, Any] = {"to": "ann@example.com", "subject": "Hello", "body": "Hi"}


async def send(client: TestClient[Any, Any]) -> str:
    return await accepted_task(client, "/send-email", EMAIL)


async def test_a_queued_job_is_cancelled_at_once_and_never_runs(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    task_id = await send(client)

    response = await client.delete(f"/jobs/{task_id}")

    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["status"] == "CANCELLED"
    assert body["error"] == "cancelled by request"
    assert await queued(redis, settings) == []

    await run_worker()

    assert smtp_server.messages == []
    after = await status_of(client, task_id)
    assert after["status"] == "CANCELLED"
    assert after["function"] == "send_email"
    assert after["history"] == []
    failed = await (await client.get("/jobs/failed")).json()
    assert failed["total"] == 0


async def test_a_job_waiting_for_its_retry_can_be_cancelled(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    smtp_server.replies = ["451 4.3.0 try again later"]
    slow_retry = settings.model_copy(update={"retry_backoff_base": 60, "retry_backoff_max": 60})
    task_id = await send(client)
    await run_worker(slow_retry, max_burst_jobs=1)
    assert (await status_of(client, task_id))["status"] == "RETRY"

    response = await client.delete(f"/jobs/{task_id}")

    assert response.status == 200
    await run_worker()
    cancelled = await status_of(client, task_id)
    assert cancelled["status"] == "CANCELLED"
    assert [h["outcome"] for h in cancelled["history"]] == ["retry"]
    assert smtp_server.messages == []


async def test_a_running_job_is_aborted_and_says_so(
    client: TestClient[Any, Any], run_worker: RunWorker, aiohttp_server: ServerFactory
) -> None:
    target = HeldTarget()
    url = await hook_url(aiohttp_server, target.handle)
    task_id = await queue_webhook(client, url, {})
    worker = asyncio.create_task(run_worker())
    try:
        await asyncio.wait_for(target.arrived.wait(), 10)

        response = await client.delete(f"/jobs/{task_id}")

        assert response.status == 202, await response.text()
        body = await response.json()
        assert body["status"] == "STARTED"
        assert body["cancel_requested_at"] is not None
        await asyncio.wait_for(worker, 10)
    finally:
        target.release.set()
        await worker

    done = await status_of(client, task_id)
    assert done["status"] == "CANCELLED"
    assert done["error"] == "cancelled by request"
    [attempt] = done["history"]
    assert attempt["outcome"] == "cancelled"
    assert attempt["duration_ms"] >= 0
    assert target.finished == 0  # the delivery was cut, not completed
    assert (await (await client.get("/jobs/failed")).json())["total"] == 0
    again = await client.delete(f"/jobs/{task_id}")
    assert again.status == 409


async def test_cancelling_a_finished_job_is_409_and_keeps_its_result(
    client: TestClient[Any, Any], run_worker: RunWorker, smtp_server: SmtpRecorder
) -> None:
    task_id = await send(client)
    await run_worker()

    response = await client.delete(f"/jobs/{task_id}")

    assert response.status == 409
    assert "already finished" in (await response.json())["error"]
    assert (await status_of(client, task_id))["status"] == "SUCCESS"


async def test_cancelling_a_finished_fire_and_forget_job_is_409(
    client: TestClient[Any, Any], run_worker: RunWorker
) -> None:
    response = await client.post("/events", json={"event": {"type": "x"}})
    task_id = (await response.json())["task_id"]
    await run_worker()

    assert (await client.delete(f"/jobs/{task_id}")).status == 409


@pytest.mark.parametrize("task_id", ["0" * 32, "bad%20id", "x" * 300])
async def test_cancelling_an_unknown_job_is_404(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, task_id: str
) -> None:
    kept = await send(client)
    response = await client.delete(f"/jobs/{task_id}")
    assert response.status == 404
    assert "no task" in (await response.json())["error"]
    assert await queued(redis, settings) == [kept]


async def test_cancel_job_api_for_the_dashboard(
    redis: ArqRedis, settings: Settings, client: TestClient[Any, Any]
) -> None:
    task_id = await send(client)
    outcome = await cancel_job(redis, settings.queue_name, task_id, result_ttl=60)
    assert outcome is CancelOutcome.CANCELLED
    with pytest.raises(JobFinishedError):
        await cancel_job(redis, settings.queue_name, task_id, result_ttl=60)
    with pytest.raises(JobNotFoundError):
        await cancel_job(redis, settings.queue_name, "f" * 32, result_ttl=60)


async def test_a_cancelled_job_cannot_be_retried(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    task_id = await send(client)
    assert (await client.delete(f"/jobs/{task_id}")).status == 200

    response = await client.post(f"/jobs/{task_id}/retry")

    assert response.status == 409
    assert await queued(redis, settings) == []
    assert (await status_of(client, task_id))["status"] == "CANCELLED"
