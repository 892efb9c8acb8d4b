"""The failed-jobs list, retrying a failed job, and every attempt's history in /task-status."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.engine.loop import BatchWorker as Worker
from service.records import failed_jobs
from service.records.failed_jobs import DeadJob
from service.store import keys
from service.worker.options import worker_options
from settings import Settings
from tests.conftest import RunWorker, SmtpRecorder, accepted_task, queued, status_of
from tests.webhook_targets import ServerFactory, hook_url, queue_webhook

EMAIL: dict[str, Any] = {"to": "ann@example.com", "subject": "Hello", "body": "Hi"}
REFUSED = "550 5.1.1 mailbox unavailable"


async def send(client: TestClient[Any, Any], **changes: Any) -> str:
    return await accepted_task(client, "/send-email", {**EMAIL, **changes})


async def failed_list(client: TestClient[Any, Any], query: str = "") -> dict[str, Any]:
    response = await client.get(f"/jobs/failed{query}")
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_a_failed_job_is_listed_with_reason_attempts_and_arguments(
    client: TestClient[Any, Any], run_worker: RunWorker, smtp_server: SmtpRecorder
) -> None:
    smtp_server.replies = [REFUSED]
    task_id = await send(client)

    await run_worker()

    listing = await failed_list(client)
    assert listing["total"] == 1
    assert listing["next"] is None
    [entry] = listing["jobs"]
    assert entry["task_id"] == task_id
    assert entry["function"] == "send_email"
    assert entry["kwargs"] == EMAIL
    assert entry["args"] == []
    assert entry["attempts"] == 1
    assert "550" in entry["error"]
    assert entry["enqueued_at"] <= entry["failed_at"]


async def test_successful_and_retried_jobs_are_not_listed(
    client: TestClient[Any, Any], run_worker: RunWorker, smtp_server: SmtpRecorder
) -> None:
    smtp_server.replies = ["451 4.3.0 try again later"]
    await send(client)

    await run_worker()

    assert len(smtp_server.messages) == 1
    assert (await failed_list(client))["total"] == 0


async def test_the_list_is_newest_first_and_paginated(
    client: TestClient[Any, Any], run_worker: RunWorker, smtp_server: SmtpRecorder
) -> None:
    smtp_server.replies = [REFUSED] * 3
    ids = []
    for n in range(3):
        ids.append(await send(client, subject=f"mail {n}"))
        await run_worker()  # one at a time, so the failure order is the sending order

    first = await failed_list(client, "?limit=2")
    assert [job["task_id"] for job in first["jobs"]] == [ids[2], ids[1]]
    assert first["total"] == 3
    assert first["next"] == "/jobs/failed?offset=2&limit=2"
    second = await failed_list(client, first["next"].removeprefix("/jobs/failed"))
    assert [job["task_id"] for job in second["jobs"]] == [ids[0]]
    assert second["next"] is None


@pytest.mark.parametrize(
    "query",
    [
        "?limit=0",
        "?limit=101",
        "?limit=abc",
        "?offset=-1",
        "?offset=1.5",
        "?limit=",
        "?limit=%C2%B2",
    ],
)
async def test_bad_paging_is_400(client: TestClient[Any, Any], query: str) -> None:
    response = await client.get(f"/jobs/failed{query}")
    assert response.status == 400
    assert "must be a whole number" in (await response.json())["error"]


def dead(job_id: str, failed_at: int) -> DeadJob:
    return DeadJob(
        job_id=job_id,
        function="send_email",
        args=[],
        kwargs=EMAIL,
        attempts=1,
        reason="PermanentError: no",
        failed_at=failed_at,
    )


async def test_the_list_keeps_at_most_the_configured_number_of_jobs(redis: ArqRedis) -> None:
    now = int(time.time() * 1000)
    for n in range(5):
        await failed_jobs.add(redis, dead(f"job{n}", now + n), max_jobs=3, max_age=3600)

    page = await failed_jobs.page(redis, offset=0, limit=10, max_age=3600, max_jobs=10)
    assert [job.job_id for job in page.jobs] == ["job4", "job3", "job2"]
    assert page.total == 3
    assert await redis.hlen(keys.dead_letter_entries()) == 3  # type: ignore[misc]


async def test_the_list_drops_jobs_older_than_the_age_limit(redis: ArqRedis) -> None:
    now = int(time.time() * 1000)
    await failed_jobs.add(redis, dead("old", now - 7_200_000), max_jobs=10, max_age=86_400)
    await failed_jobs.add(redis, dead("new", now), max_jobs=10, max_age=86_400)

    page = await failed_jobs.page(redis, offset=0, limit=10, max_age=3600, max_jobs=10)
    assert [job.job_id for job in page.jobs] == ["new"]
    assert page.total == 1
    assert await redis.hkeys(keys.dead_letter_entries()) == [b"new"]  # type: ignore[misc]


async def test_a_failed_job_retried_runs_again_under_its_id_and_succeeds(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    smtp_server.replies = [REFUSED]
    task_id = await send(client)
    await run_worker()
    assert (await status_of(client, task_id))["status"] == "FAILURE"

    response = await client.post(f"/jobs/{task_id}/retry")

    assert response.status == 202, await response.text()
    assert (await response.json())["task_id"] == task_id
    assert response.headers["Location"] == f"/task-status/{task_id}"
    assert (await failed_list(client))["total"] == 0
    assert await queued(redis, settings) == [task_id]
    assert (await status_of(client, task_id))["status"] == "PENDING"

    await run_worker()

    assert [mail.recipients for mail in smtp_server.messages] == [["ann@example.com"]]
    done = await status_of(client, task_id)
    assert done["status"] == "SUCCESS"
    assert [(h["run"], h["attempt"], h["outcome"]) for h in done["history"]] == [
        (1, 1, "failure"),
        (2, 1, "success"),
    ]
    assert "550" in done["history"][0]["error"]


async def test_retrying_twice_at_once_queues_the_job_once(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    smtp_server.replies = [REFUSED]
    task_id = await send(client)
    await run_worker()

    answers = await asyncio.gather(*(client.post(f"/jobs/{task_id}/retry") for _ in range(2)))

    assert sorted(answer.status for answer in answers) == [202, 409]
    assert await queued(redis, settings) == [task_id]


async def test_retrying_a_job_that_did_not_fail_is_409_and_changes_nothing(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    pending = await send(client)
    response = await client.post(f"/jobs/{pending}/retry")
    assert response.status == 409
    assert "not in the failed-jobs list" in (await response.json())["error"]
    assert await queued(redis, settings) == [pending]

    await run_worker()
    response = await client.post(f"/jobs/{pending}/retry")
    assert response.status == 409
    assert await queued(redis, settings) == []
    assert len(smtp_server.messages) == 1


@pytest.mark.parametrize("task_id", ["0" * 32, "bad%20id", "x" * 300])
async def test_retrying_an_unknown_job_is_404(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, task_id: str
) -> None:
    response = await client.post(f"/jobs/{task_id}/retry")
    assert response.status == 404
    assert "no task" in (await response.json())["error"]
    assert await queued(redis, settings) == []


async def test_every_attempt_is_in_the_status_with_outcome_error_and_duration(
    client: TestClient[Any, Any], run_worker: RunWorker, aiohttp_server: ServerFactory
) -> None:
    answers = [503, 200]

    async def flaky(request: web.Request) -> web.Response:
        return web.Response(status=answers.pop(0))

    url = await hook_url(aiohttp_server, flaky)
    task_id = await queue_webhook(client, url, {})

    await run_worker()

    history = (await status_of(client, task_id))["history"]
    assert [(h["attempt"], h["outcome"], h["error"]) for h in history] == [
        (1, "retry", "webhook answered 503"),
        (2, "success", None),
    ]
    for item in history:
        assert item["started_at"] <= item["finished_at"]
        assert item["duration_ms"] >= 0


async def test_an_attempt_lost_with_its_worker_shows_as_interrupted(
    client: TestClient[Any, Any], redis: ArqRedis, run_worker: RunWorker
) -> None:
    task_id = await send(client)
    # What a worker killed mid-attempt leaves: the attempt opened, never closed.
    started = int(time.time() * 1000) - 5000
    await redis.hset(  # type: ignore[misc]
        keys.job_meta(task_id), mapping={"open_attempt": 1, "started_at": started, "attempts": 1}
    )
    await redis.set(f"arq:retry:{task_id}", 1)

    await run_worker()

    done = await status_of(client, task_id)
    assert done["status"] == "SUCCESS"
    assert [(h["attempt"], h["outcome"]) for h in done["history"]] == [
        (1, "interrupted"),
        (2, "success"),
    ]
    assert done["history"][0]["finished_at"] is None
    assert "worker stopped" in done["history"][0]["error"]


async def test_a_job_past_its_time_limit_is_listed_and_its_attempt_says_timeout(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    aiohttp_server: ServerFactory,
) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    url = await hook_url(aiohttp_server, hang)
    impatient = settings.model_copy(
        update={"job_timeout": 0.3, "webhook_job_timeout": 0.3, "webhook_timeout": 30}
    )
    task_id = await queue_webhook(client, url, {"n": 1})

    try:
        await run_worker(impatient)
    finally:
        release.set()

    [entry] = (await failed_list(client))["jobs"]
    assert entry["task_id"] == task_id
    assert entry["kwargs"]["payload"] == {"n": 1}
    assert "time limit" in entry["error"]
    history = (await status_of(client, task_id))["history"]
    assert [h["outcome"] for h in history] == ["timeout"]


async def test_a_job_whose_last_attempt_is_cut_by_a_shutdown_is_listed(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    aiohttp_server: ServerFactory,
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response()

    url = await hook_url(aiohttp_server, hold)
    one_try = settings.model_copy(update={"job_max_tries": 1})
    task_id = await queue_webhook(client, url, {"n": 2})
    options = worker_options(one_try)
    options["redis_pool"].wait_for_work = False
    options.update(burst=True, poll_delay=0.01, handle_signals=False)
    worker = Worker(**options)
    running = asyncio.create_task(worker.main())
    try:
        await asyncio.wait_for(arrived.wait(), 10)
        worker.handle_sig(signal.SIGTERM)  # what arq does on SIGTERM: cancel running jobs
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    finally:
        release.set()
        await worker.close()
    assert (await failed_list(client))["total"] == 0  # re-queued, not failed yet

    await run_worker(one_try)  # arq finds the job out of tries and fails it, running nothing

    [entry] = (await failed_list(client))["jobs"]
    assert entry["task_id"] == task_id
    assert entry["kwargs"]["payload"] == {"n": 2}
    assert "max 1 retries exceeded" in entry["error"]
    assert failed_jobs.LAST_ATTEMPT_LOST in entry["error"]
    history = (await status_of(client, task_id))["history"]
    assert [h["outcome"] for h in history] == ["interrupted"]


async def test_a_discarded_failed_job_leaves_the_list_and_cannot_be_retried(
    client: TestClient[Any, Any], redis: ArqRedis, run_worker: RunWorker, smtp_server: SmtpRecorder
) -> None:
    smtp_server.replies = [REFUSED]
    task_id = await send(client)
    await run_worker()

    assert await failed_jobs.discard(redis, task_id) is True
    assert await failed_jobs.discard(redis, task_id) is False

    assert (await failed_list(client))["total"] == 0
    assert (await client.post(f"/jobs/{task_id}/retry")).status == 409
    assert (await status_of(client, task_id))["status"] == "FAILURE"
