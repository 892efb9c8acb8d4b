"""send_email end to end: API -> Redis -> real worker -> real SMTP server -> status API."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from arq.jobs import Job

from service.records import failed_jobs
from service.records.failed_jobs import DeadJob
from service.store.serialization import deserialize
from settings import Settings
from tests.conftest import (
    RunWorker,
    SmtpRecorder,
    accepted_task,
    assert_refused,
    queued,
    status_of,
)

EMAIL: dict[str, Any] = {"to": "ann@example.com", "subject": "Hello", "body": "Line one\nLine two"}


async def test_send_email_is_queued_sent_and_reported(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    response = await client.post("/send-email", json=EMAIL)
    assert response.status == 202
    body = await response.json()
    assert body["message"] == "Email queued!"
    task_id = body["task_id"]
    assert await queued(redis, settings) == [task_id]
    pending = await status_of(client, task_id)
    assert pending["status"] == "PENDING"
    assert pending["function"] == "send_email"
    assert pending["attempts"] == 0

    await run_worker()

    assert len(smtp_server.messages) == 1
    mail = smtp_server.messages[0]
    assert mail.recipients == ["ann@example.com"]
    assert mail.sender == "jobs@example.com"
    assert mail.message["Subject"] == "Hello"
    assert mail.message.get_content().replace("\r\n", "\n").strip() == "Line one\nLine two"
    done = await status_of(client, task_id)
    assert done["status"] == "SUCCESS"
    assert done["attempts"] == 1
    assert done["result"] == {"to": "ann@example.com", "message_id": mail.message["Message-ID"]}
    assert done["enqueued_at"] <= done["started_at"] <= done["finished_at"]


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        ("Hello", "Hi Ann! " * 20 + "\n. a dot line\n"),  # written directly: quoted-printable
        ("Grüße, Zoë", "Schöne Grüße aus Köln!\n"),  # the email package: encoded word, 8bit
        ("Hello", "日本語のテキスト" * 30),  # written directly: base64
    ],
)
async def test_any_text_arrives_as_it_was_sent(
    client: TestClient[Any, Any],
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
    subject: str,
    body: str,
) -> None:
    email = {"to": "ann@example.com", "subject": subject, "body": body}
    task_id = (await (await client.post("/send-email", json=email)).json())["task_id"]

    await run_worker()

    (mail,) = smtp_server.messages
    assert mail.message["Subject"] == subject
    assert mail.message.get_content().replace("\r\n", "\n").rstrip("\n") == body.rstrip("\n")
    assert mail.message["Message-ID"] == f"<{task_id}@example.com>"


async def test_transient_smtp_reply_is_retried_until_accepted(
    client: TestClient[Any, Any], run_worker: RunWorker, smtp_server: SmtpRecorder
) -> None:
    smtp_server.replies = ["451 4.3.0 try again later"]
    task_id = (await (await client.post("/send-email", json=EMAIL)).json())["task_id"]

    await run_worker()

    assert len(smtp_server.messages) == 1
    done = await status_of(client, task_id)
    assert done["status"] == "SUCCESS"
    assert done["attempts"] == 2


async def test_permanent_smtp_reply_fails_at_once_with_the_reply(
    client: TestClient[Any, Any], run_worker: RunWorker, smtp_server: SmtpRecorder
) -> None:
    smtp_server.replies = ["550 5.1.1 mailbox unavailable"] * 3
    task_id = (await (await client.post("/send-email", json=EMAIL)).json())["task_id"]

    await run_worker()

    assert smtp_server.messages == []
    failed = await status_of(client, task_id)
    assert failed["status"] == "FAILURE"
    assert failed["attempts"] == 1
    assert "550" in failed["error"]
    assert "mailbox unavailable" in failed["error"]
    assert len(smtp_server.replies) == 2, "a permanent failure must not be retried"


async def test_unreachable_server_is_retried_then_fails_with_reason(
    client: TestClient[Any, Any],
    settings: Settings,
    redis: ArqRedis,
    run_worker: RunWorker,
) -> None:
    from tests.conftest import free_port

    nowhere = settings.model_copy(update={"smtp_port": free_port()})
    task_id = (await (await client.post("/send-email", json=EMAIL)).json())["task_id"]

    await run_worker(nowhere)

    failed = await status_of(client, task_id)
    assert failed["status"] == "FAILURE"
    assert failed["attempts"] == settings.job_max_tries
    assert "gave up after 3 attempts" in failed["error"]
    assert "SMTP server unreachable" in failed["error"]


async def test_smtp_server_that_never_answers_times_out_and_is_retried(
    client: TestClient[Any, Any], settings: Settings, run_worker: RunWorker
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept the connection, never greet
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    mute = settings.model_copy(update={"smtp_port": port, "smtp_timeout": 0.2})
    task_id = (await (await client.post("/send-email", json=EMAIL)).json())["task_id"]

    async with server:
        await run_worker(mute)

    failed = await status_of(client, task_id)
    assert failed["status"] == "FAILURE"
    assert failed["attempts"] == settings.job_max_tries
    assert "timed out" in failed["error"]


@pytest.mark.parametrize("how", ["delivered again by arq", "retried from the failed list"])
async def test_a_sent_email_job_that_runs_again_does_not_send_again(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
    how: str,
) -> None:
    task_id = (await (await client.post("/send-email", json=EMAIL)).json())["task_id"]
    await run_worker()
    first = await status_of(client, task_id)

    await redis.delete(f"arq:result:{task_id}")
    if how == "delivered again by arq":  # arq is at-least-once
        await redis.enqueue_job("send_email", _job_id=task_id, **EMAIL)
    else:  # it sent, then failed (its bookkeeping, say): a retry is a new run of the same id
        now = int(time.time() * 1000)
        failed = DeadJob(task_id, "send_email", [], EMAIL, 1, "RuntimeError: after sending", now)
        await failed_jobs.add(redis, failed, max_jobs=10, max_age=3600)
        assert (await client.post(f"/jobs/{task_id}/retry")).status == 202
    await run_worker()

    assert len(smtp_server.messages) == 1
    again = await status_of(client, task_id)
    assert again["status"] == "SUCCESS"
    assert again["result"] == first["result"]
    assert len(again["history"]) == 2


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"subject": "Hi", "body": "x"}, "to: Field required"),
        ({"to": "not-an-address", "subject": "Hi", "body": "x"}, "to: not a valid email address"),
        ({"to": "a@example.com", "subject": "Hi\r\nBcc: x@example.com", "body": "x"}, "subject"),
        ({"to": "a@example.com", "subject": "Hi\nthere", "body": "x"}, "control characters"),
        ({"to": "a@example.com", "subject": 5, "body": "x"}, "subject: Input should be"),
        ({"to": "a@example.com", "subject": "", "body": "x"}, "subject"),
        ({"to": "a@example.com", "subject": "Hi", "body": ["x"]}, "body"),
        ({"to": "a@example.com\r\nBcc: b@example.com", "subject": "Hi", "body": "x"}, "to"),
        ({"to": "a@example.com", "subject": "Hi", "body": "x", "cc": "b@example.com"}, "cc"),
    ],
)
async def test_bad_email_requests_are_400_and_queue_nothing(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    payload: dict[str, Any],
    reason: str,
) -> None:
    response = await client.post("/send-email", json=payload)
    await assert_refused(response, 400, reason, redis, settings)


async def test_an_address_sent_to_again_is_judged_the_same(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    """Valid addresses are remembered (web.schemas); invalid ones are checked every time."""
    for _ in range(2):
        response = await client.post(
            "/send-email", json={"to": "not-an-address", "subject": "Hi", "body": "x"}
        )
        await assert_refused(response, 400, "to: not a valid email address", redis, settings)
    task_ids = [
        await accepted_task(
            client, "/send-email", {"to": "Ann@EXAMPLE.com", "subject": "Hi", "body": "x"}
        )
        for _ in range(2)
    ]
    for task_id in task_ids:
        info = await Job(task_id, redis, _deserializer=deserialize).info()
        assert info is not None
        assert info.kwargs["to"] == "Ann@example.com"  # the domain lower-cased, both times


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b'"text"', b"\xff\xfe"])
async def test_malformed_json_is_400(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, raw: bytes
) -> None:
    response = await client.post(
        "/send-email", data=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert "error" in await response.json()
    assert await queued(redis, settings) == []


async def test_oversized_json_body_is_413_and_queues_nothing(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    huge = {"to": "a@example.com", "subject": "s", "body": "x" * (2 * 1024 * 1024)}
    response = await client.post(
        "/send-email",
        data=io.BytesIO(json.dumps(huge).encode()),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 413
    assert "error" in await response.json()
    assert await queued(redis, settings) == []
