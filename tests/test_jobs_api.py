"""POST /jobs (any registered job, by name) and run_at/delay on every route that queues a job."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from settings import Settings
from tests.conftest import (
    AUTH_HEADERS,
    ClientFactory,
    RunWorker,
    SmtpRecorder,
    assert_refused,
    queued,
    status_of,
)
from tests.days import RECENT_DAY
from web import create_app

EMAIL: dict[str, Any] = {"to": "ann@example.com", "subject": "Hello", "body": "Hi Ann!"}


async def queue(client: TestClient[Any, Any], body: dict[str, Any], path: str = "/jobs") -> str:
    response = await client.post(path, json=body)
    assert response.status == 202, await response.text()
    assert response.headers["Location"].startswith("/task-status/")
    task_id: str = (await response.json())["task_id"]
    return task_id


async def score_of(redis: ArqRedis, settings: Settings, task_id: str) -> float:
    score = await redis.zscore(settings.queue_name, task_id)
    assert score is not None
    return float(score)


async def test_any_api_job_is_queued_by_name_and_runs(
    client: TestClient[Any, Any], run_worker: RunWorker, smtp_server: SmtpRecorder
) -> None:
    response = await client.post("/jobs", json={"function": "send_email", "kwargs": EMAIL})
    assert response.status == 202
    body = await response.json()
    assert body["message"] == "Job queued!"
    assert "scheduled_for" not in body
    pending = await status_of(client, body["task_id"])
    assert (pending["status"], pending["function"]) == ("PENDING", "send_email")

    await run_worker()

    assert [mail.recipients for mail in smtp_server.messages] == [["ann@example.com"]]
    assert (await status_of(client, body["task_id"]))["status"] == "SUCCESS"


async def test_a_job_without_arguments_needs_no_kwargs(
    client: TestClient[Any, Any], run_worker: RunWorker
) -> None:
    task_id = await queue(client, {"function": "daily_report"})
    await run_worker()
    done = await status_of(client, task_id)
    assert done["status"] == "SUCCESS"
    assert done["result"]["path"].startswith("reports/")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"function": "send_email", "kwargs": {**EMAIL, "to": "nobody"}}, "kwargs.to: not a valid"),
        ({"function": "send_email", "kwargs": {"to": "ann@example.com"}}, "kwargs.subject:"),
        ({"function": "send_email", "kwargs": {**EMAIL, "cc": "x@example.com"}}, "kwargs.cc:"),
        ({"function": "send_email", "kwargs": [1]}, "kwargs:"),
        ({"function": "send_email", "kwargs": {**EMAIL, "subject": "a\r\nBcc: x@y.z"}}, "CR"),
        ({"function": 7, "kwargs": EMAIL}, "function:"),
        ({"kwargs": EMAIL}, "function:"),
        (
            {"function": "deliver_webhook", "kwargs": {"url": "http://127.1/", "payload": {}}},
            "kwargs.url:",
        ),
        ({"function": "log_event", "kwargs": {"event": {}}, "delay": -1}, "delay:"),
        ({"function": "log_event", "kwargs": {"event": {}}, "delay": "60"}, "delay:"),
        ({"function": "log_event", "kwargs": {"event": {}}, "run_at": "tomorrow"}, "run_at:"),
        # RFC 3339 requires the offset: a local time would be read in some unknown zone
        (
            {"function": "log_event", "kwargs": {"event": {}}, "run_at": "2030-01-01T00:00:00"},
            "run_at:",
        ),
        (
            {
                "function": "log_event",
                "kwargs": {"event": {}},
                "delay": 5,
                "run_at": "2030-01-01T00:00:00Z",
            },
            "not both",
        ),
        ({"function": "log_event", "kwargs": {"event": {}}, "delay": 366 * 86400}, "delay:"),
        (
            {"function": "log_event", "kwargs": {"event": {}}, "run_at": "2999-01-01T00:00:00Z"},
            "at most a year",
        ),
    ],
)
async def test_bad_requests_are_400_naming_the_field_and_queue_nothing(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    body: dict[str, Any],
    reason: str,
) -> None:
    await assert_refused(await client.post("/jobs", json=body), 400, reason, redis, settings)


@pytest.mark.parametrize("function", ["send_welcome_email", "process_image", "nope", "cron:x"])
async def test_a_job_not_open_to_the_api_or_not_registered_is_404(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, function: str
) -> None:
    response = await client.post("/jobs", json={"function": function, "kwargs": {"user_id": 1}})
    await assert_refused(response, 404, "may be queued through the API", redis, settings)


async def test_post_jobs_needs_a_token(
    aiohttp_client: ClientFactory, redis: ArqRedis, settings: Settings
) -> None:
    anonymous = await aiohttp_client(create_app(settings))
    response = await anonymous.post(
        "/jobs", json={"function": "log_event", "kwargs": {"event": {}}}
    )
    assert response.status == 401
    assert await queued(redis, settings) == []


async def test_a_recipient_counts_whichever_route_queues_the_email(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    limited = settings.model_copy(update={"rate_limit_per_recipient": "2/hour"})
    client = await aiohttp_client(create_app(limited), headers=AUTH_HEADERS)
    assert (await client.post("/send-email", json=EMAIL)).status == 202
    assert (
        await client.post("/jobs", json={"function": "send_email", "kwargs": EMAIL})
    ).status == 202
    response = await client.post("/jobs", json={"function": "send_email", "kwargs": EMAIL})
    assert response.status == 429, await response.text()
    assert "Retry-After" in response.headers
    assert len(await queued(redis, settings)) == 2


async def test_an_idempotency_key_on_post_jobs_queues_once(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    body = {"function": "log_event", "kwargs": {"event": {"n": 1}}}
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post("/jobs", json=body, headers=headers)
    again = await client.post("/jobs", json=body, headers=headers)
    assert (first.status, again.status) == (202, 200)
    assert (await first.json())["task_id"] == (await again.json())["task_id"]
    assert len(await queued(redis, settings)) == 1


DEDICATED_ROUTES = [
    ("/send-email", EMAIL),
    ("/webhooks", {"url": "http://127.0.0.1:9/hook", "payload": {"n": 1}}),
    ("/events", {"event": {"n": 1}}),
    ("/reports/daily", {"day": RECENT_DAY}),
]


@pytest.mark.parametrize(
    ("path", "body"),
    [*DEDICATED_ROUTES, ("/jobs", {"function": "log_event", "kwargs": {"event": {"n": 1}}})],
)
async def test_every_job_route_takes_a_delay_and_the_job_waits_for_it(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    path: str,
    body: dict[str, Any],
) -> None:
    before = time.time()
    response = await client.post(path, json={**body, "delay": 3600})
    assert response.status == 202, await response.text()
    answer = await response.json()
    due = await score_of(redis, settings, answer["task_id"])
    assert before + 3600 <= due / 1000 <= time.time() + 3600 + 1
    status = await status_of(client, answer["task_id"])
    assert status["status"] == "PENDING"
    assert status["scheduled_for"] == answer["scheduled_for"]
    # the stored job outlives its wait (arq drops a job whose key expired before it ran)
    ttl_ms = await redis.pttl(f"arq:job:{answer['task_id']}")
    assert ttl_ms > 3600 * 1000


@pytest.mark.parametrize(("path", "body"), DEDICATED_ROUTES)
@pytest.mark.parametrize(
    ("scheduling", "reason"),
    [
        ({"delay": -1}, "delay:"),
        ({"delay": 366 * 86400}, "delay:"),
        ({"run_at": "2030-01-01T00:00:00"}, "run_at:"),
        ({"run_at": "2999-01-01T00:00:00Z"}, "at most a year"),
        ({"delay": 5, "run_at": "2030-01-01T00:00:00Z"}, "not both"),
    ],
)
async def test_a_job_route_refuses_a_bad_time_with_400_and_queues_nothing(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    path: str,
    body: dict[str, Any],
    scheduling: dict[str, Any],
    reason: str,
) -> None:
    response = await client.post(path, json={**body, **scheduling})
    await assert_refused(response, 400, reason, redis, settings)


async def test_run_at_takes_any_offset_and_stores_the_instant(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    in_paris = when.astimezone(timezone(timedelta(hours=1))).isoformat()
    task_id = await queue(client, {**EMAIL, "run_at": in_paris}, "/send-email")
    assert await score_of(redis, settings, task_id) == when.timestamp() * 1000
    status = await status_of(client, task_id)
    assert status["scheduled_for"] == when.isoformat(timespec="milliseconds")


async def test_a_time_in_the_past_runs_at_once(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, run_worker: RunWorker
) -> None:
    before_ms = time.time() * 1000
    task_id = await queue(client, {"event": {"n": 1}, "run_at": "2001-01-01T00:00:00Z"}, "/events")
    assert await score_of(redis, settings, task_id) >= before_ms
    await run_worker()
    assert (await status_of(client, task_id))["status"] == "SUCCESS"


async def test_a_deferred_job_runs_once_it_is_due(
    client: TestClient[Any, Any], run_worker: RunWorker, smtp_server: SmtpRecorder
) -> None:
    task_id = await queue(client, {**EMAIL, "delay": 0.5}, "/send-email")
    assert (await status_of(client, task_id))["status"] == "PENDING"
    # a burst worker keeps going while a deferred job waits in the queue
    await run_worker()
    assert len(smtp_server.messages) == 1
    done = await status_of(client, task_id)
    assert done["status"] == "SUCCESS"
    assert done["started_at"] >= done["enqueued_at"]


async def test_the_openapi_document_describes_each_api_jobs_kwargs(
    client: TestClient[Any, Any],
) -> None:
    spec = await (await client.get("/openapi.json")).json()
    body = spec["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    mapping = body["discriminator"]["mapping"]
    assert set(mapping) == {"send_email", "deliver_webhook", "log_event", "daily_report"}
    schemas = spec["components"]["schemas"]
    email_job = schemas[mapping["send_email"].rsplit("/", 1)[1]]
    assert email_job["properties"]["function"]["const"] == "send_email"
    kwargs = schemas[email_job["properties"]["kwargs"]["$ref"].rsplit("/", 1)[1]]
    assert set(kwargs["required"]) == {"to", "subject", "body"}
    assert {"run_at", "delay"} <= set(email_job["properties"])
    assert "404" in spec["paths"]["/jobs"]["post"]["responses"]
    route_body = spec["paths"]["/send-email"]["post"]["requestBody"]["content"]
    route_model = schemas[route_body["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert {"to", "subject", "body", "run_at", "delay"} == set(route_model["properties"])
