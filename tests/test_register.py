"""Registration: a user row and one welcome email, however often the job runs."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.store.database import open_database
from settings import Settings
from tests.conftest import RunWorker, SmtpRecorder, assert_refused, queued, status_of


async def test_register_creates_user_and_sends_one_welcome_email(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    response = await client.post("/register", json={"name": "Ann Lee", "email": "Ann@Example.com"})
    assert response.status == 201
    body = await response.json()
    assert body["name"] == "Ann Lee"
    assert body["email"] == "ann@example.com"
    assert isinstance(body["id"], int)
    assert await queued(redis, settings) == [body["task_id"]]

    await run_worker()

    assert [mail.recipients for mail in smtp_server.messages] == [["ann@example.com"]]
    assert smtp_server.messages[0].message["Subject"] == "Welcome Ann Lee!"
    done = await status_of(client, body["task_id"])
    assert done["status"] == "SUCCESS"
    assert done["result"]["status"] == "sent"
    db = await open_database(settings)
    try:
        user = await db.get_user(body["id"])
    finally:
        await db.close()
    assert user is not None
    assert user.welcome_sent_at is not None


async def test_welcome_email_is_sent_once_even_if_enqueued_twice(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
    settings: Settings,
) -> None:
    body = await (
        await client.post("/register", json={"name": "Bo", "email": "bo@example.com"})
    ).json()
    second = await redis.enqueue_job("send_welcome_email", user_id=body["id"])
    assert second is not None

    # the job that finds the other one sending retries until it is done: give it tries enough
    # for a slow (loaded) machine, or it gives up before the first send ends
    await run_worker(settings.model_copy(update={"job_max_tries": 50, "retry_backoff_max": 0.1}))

    assert len(smtp_server.messages) == 1
    outcomes = {
        (await status_of(client, body["task_id"]))["result"]["status"],
        (await status_of(client, second.job_id))["result"]["status"],
    }
    assert outcomes == {"sent", "already sent"}


async def test_welcome_job_reads_the_user_by_id_at_run_time(
    client: TestClient[Any, Any], redis: ArqRedis, run_worker: RunWorker
) -> None:
    job = await redis.enqueue_job("send_welcome_email", user_id=4242)
    assert job is not None
    await run_worker()
    failed = await status_of(client, job.job_id)
    assert failed["status"] == "FAILURE"
    assert "user 4242 does not exist" in failed["error"]


async def test_registering_an_email_twice_is_409_and_queues_nothing_more(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    first = await client.post("/register", json={"name": "Cy", "email": "cy@example.com"})
    assert first.status == 201
    again = await client.post("/register", json={"name": "Cy 2", "email": "CY@example.com"})
    assert again.status == 409
    assert "already registered" in (await again.json())["error"]
    assert len(await queued(redis, settings)) == 1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"email": "a@example.com"}, "name: Field required"),
        ({"name": "A"}, "email: Field required"),
        ({"name": "", "email": "a@example.com"}, "name"),
        ({"name": "A\r\nBcc: x@example.com", "email": "a@example.com"}, "control characters"),
        ({"name": "A", "email": "nope"}, "not a valid email address"),
        ({"name": 7, "email": "a@example.com"}, "name: Input should be a valid string"),
        # the description's maxLength counts the string as sent, whitespace included (a name
        # that fits only once stripped was accepted: found by schemathesis)
        ({"name": "\v" + "a" * 100, "email": "a@example.com"}, "at most 100 characters"),
    ],
)
async def test_bad_registrations_are_400_and_change_nothing(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    payload: dict[str, Any],
    reason: str,
) -> None:
    response = await client.post("/register", json=payload)
    await assert_refused(response, 400, reason, redis, settings)
    db = await open_database(settings)
    try:
        assert await db.get_user(1) is None
    finally:
        await db.close()
