"""/task-status through a job's life: PENDING, STARTED, RETRY, SUCCESS, FAILURE, unknown."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.store import keys
from settings import Settings
from tests.conftest import RunWorker, status_of
from tests.webhook_targets import HeldTarget, ServerFactory, hook_url, queue_webhook


async def test_status_moves_from_pending_to_started_to_success(
    client: TestClient[Any, Any], run_worker: RunWorker, aiohttp_server: ServerFactory
) -> None:
    target = HeldTarget()
    url = await hook_url(aiohttp_server, target.handle)
    task_id = await queue_webhook(client, url, {"n": 1})
    assert (await status_of(client, task_id))["status"] == "PENDING"

    worker = asyncio.create_task(run_worker())
    await asyncio.wait_for(target.arrived.wait(), 10)
    running = await status_of(client, task_id)
    assert running["status"] == "STARTED"
    assert running["attempts"] == 1
    assert running["started_at"] is not None
    assert running["finished_at"] is None

    target.release.set()
    await worker
    assert (await status_of(client, task_id))["status"] == "SUCCESS"


async def test_status_is_retry_between_attempts_with_reason_and_next_time(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    aiohttp_server: ServerFactory,
) -> None:
    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503)

    url = await hook_url(aiohttp_server, unavailable)
    slow_retry = settings.model_copy(update={"retry_backoff_base": 60, "retry_backoff_max": 60})
    task_id = await queue_webhook(client, url, {})

    await run_worker(slow_retry, max_burst_jobs=1)

    waiting = await status_of(client, task_id)
    assert waiting["status"] == "RETRY"
    assert waiting["attempts"] == 1
    assert waiting["error"] == "webhook answered 503"
    assert waiting["next_attempt_at"] > waiting["started_at"]


async def test_job_past_its_time_limit_fails_saying_so(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    aiohttp_server: ServerFactory,
) -> None:
    target = HeldTarget()
    url = await hook_url(aiohttp_server, target.handle)
    impatient = settings.model_copy(
        update={"job_timeout": 0.3, "webhook_job_timeout": 0.3, "webhook_timeout": 30}
    )
    task_id = await queue_webhook(client, url, {})

    try:
        await run_worker(impatient)
    finally:
        target.release.set()

    failed = await status_of(client, task_id)
    assert failed["status"] == "FAILURE"
    assert "ran past its time limit (0.3 s)" in failed["error"]
    assert failed["max_tries"] == settings.job_max_tries


async def test_fire_and_forget_event_keeps_no_result_but_reports_success(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    run_worker: RunWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    response = await client.post("/events", json={"event": {"type": "signup", "plan": "pro"}})
    assert response.status == 202
    task_id = (await response.json())["task_id"]

    with caplog.at_level(logging.INFO, logger="jobservice.events"):
        await run_worker()

    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "jobservice.events"]
    assert lines == [{"job_id": task_id, "event": {"type": "signup", "plan": "pro"}}]
    assert await redis.get(f"arq:result:{task_id}") is None
    done = await status_of(client, task_id)
    assert done["status"] == "SUCCESS"
    assert done["function"] == "log_event"
    assert done["result"] is None


# a string event is valid since issue 14.1 (tests/test_events.py); an empty one is not
@pytest.mark.parametrize("payload", [{"event": ""}, {"event": [1]}, {}, {"event": None}])
async def test_bad_events_are_400(client: TestClient[Any, Any], payload: dict[str, Any]) -> None:
    response = await client.post("/events", json=payload)
    assert response.status == 400
    assert "event" in (await response.json())["error"]


async def test_job_killed_too_often_fails_naming_the_last_error(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, run_worker: RunWorker
) -> None:
    job = await redis.enqueue_job("send_email", to="a@example.com", subject="s", body="b")
    assert job is not None
    # As if every earlier attempt died with its worker: arq counted them, none finished.
    await redis.set(f"arq:retry:{job.job_id}", settings.job_max_tries)
    await redis.hset(keys.job_meta(job.job_id), mapping={"last_error": "attempt interrupted"})  # type: ignore[misc]

    await run_worker()

    failed = await status_of(client, job.job_id)
    assert failed["status"] == "FAILURE"
    assert "max 3 retries exceeded" in failed["error"]
    assert "last error: attempt interrupted" in failed["error"]


@pytest.mark.parametrize("task_id", ["0" * 32, "no-such-task", "x" * 300, "bad%20id"])
async def test_unknown_task_is_404_json(client: TestClient[Any, Any], task_id: str) -> None:
    response = await client.get(f"/task-status/{task_id}")
    assert response.status == 404
    assert "no task" in (await response.json())["error"]


async def test_unknown_route_and_wrong_method_answer_json(client: TestClient[Any, Any]) -> None:
    missing = await client.get("/nope")
    assert missing.status == 404
    assert (await missing.json())["error"]
    wrong = await client.get("/send-email")
    assert wrong.status == 405
    assert wrong.headers["Allow"] == "POST"
    assert (await wrong.json())["error"]


async def test_answers_that_carry_job_data_may_not_be_stored_by_any_cache(
    client: TestClient[Any, Any], run_worker: RunWorker
) -> None:
    queued = await client.post("/webhooks", json={"url": "http://127.0.0.1:9/x", "payload": {}})
    assert queued.status == 202
    task_id = (await queued.json())["task_id"]
    await run_worker()  # it fails: now in the failed-jobs list too
    answers = [
        queued,
        await client.get(f"/task-status/{task_id}"),
        await client.get("/jobs/failed"),
        await client.get(f"/jobs/{task_id}/events"),
        await client.get("/dashboard/events"),
        await client.get(f"/task-status/{'0' * 32}"),  # a 404 says whether an id exists
        await client.get("/jobs/failed?limit=0"),  # errors too
    ]
    for answer in answers:
        assert answer.headers.get("Cache-Control") == "no-store", (answer.url, answer.status)
    static = await client.get("/dashboard/static/dashboard.js")
    assert static.status == 200
    assert "no-store" not in static.headers.get("Cache-Control", "")  # may be cached
