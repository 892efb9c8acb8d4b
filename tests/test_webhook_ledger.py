"""The webhook delivery ledger: what each attempt got back, against real loopback receivers,
as /task-status's history shows it and as Redis keeps it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from pytest_aiohttp import AiohttpServer

from jobs.webhook_ledger import delivery_record
from service.observability.masking import MASK
from service.records import attempts
from service.records.deliveries import BODY_MAX, mask_body, stored_delivery, stored_size
from service.store import keys
from settings import Settings
from tests.conftest import RunWorker, status_of
from tests.webhook_targets import queue_webhook

SECRET = "s3cr3t-receiver-token"


@dataclass
class Scripted:
    """Answers each request with the next of ``replies`` (status, headers, body); ``None``
    hangs until the test ends."""

    replies: list[tuple[int, dict[str, str], str] | None] = field(default_factory=list)
    hits: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        reply = self.replies.pop(0) if self.replies else (200, {}, "")
        if reply is None:
            await self.release.wait()
            return web.Response(status=200)
        status, headers, body = reply
        return web.Response(status=status, headers=headers, text=body)


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> AsyncIterator[tuple[Scripted, str]]:
    scripted = Scripted()
    app = web.Application()
    app.router.add_post("/hook", scripted.handle)
    server = await aiohttp_server(app)
    try:
        yield scripted, str(server.make_url("/hook"))
    finally:
        scripted.release.set()  # a hung handler must end before the server closes


async def test_each_attempt_records_status_headers_and_the_start_of_the_body_masked(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    run_worker: RunWorker,
    receiver: tuple[Scripted, str],
) -> None:
    scripted, url = receiver
    failing = json.dumps({"error": "db down", "token": SECRET, "see": f"https://u:{SECRET}@x/"})
    scripted.replies = [
        (500, {"Retry-After": "0", "X-Request-ID": "rcv-1", "Set-Cookie": f"s={SECRET}"}, failing),
        (200, {"Content-Type": "text/plain"}, "thanks"),
    ]
    task_id = await queue_webhook(client, url, {"n": 1})

    await run_worker()

    status = await status_of(client, task_id)
    assert status["status"] == "SUCCESS"
    first, second = (attempt["delivery"] for attempt in status["history"])
    assert first["status"] == 500
    assert first["headers"]["retry-after"] == "0"
    assert first["headers"]["x-request-id"] == "rcv-1"
    assert first["headers"]["content-type"].startswith("text/plain")
    assert "set-cookie" not in first["headers"], "only the headers that explain an answer"
    assert SECRET not in json.dumps(status), "the receiver's secrets are masked"
    assert json.loads(first["body"])["token"] == MASK
    assert json.loads(first["body"])["error"] == "db down"
    assert first["body_truncated"] is False
    assert second == {
        "status": 200,
        "duration_ms": second["duration_ms"],
        "headers": {"content-type": "text/plain; charset=utf-8", "content-length": "6"},
        "body": "thanks",
        "body_truncated": False,
    }
    for delivery in (first, second):
        assert isinstance(delivery["duration_ms"], int)
        assert 0 <= delivery["duration_ms"] < 2000
    # stored in the attempt's own history entry: nothing else to expire or to bound
    stored = await redis.lrange(keys.job_attempts(task_id), 0, -1)  # type: ignore[misc]
    assert [json.loads(raw)["delivery"]["status"] for raw in stored] == [500, 200]
    assert await redis.ttl(keys.job_attempts(task_id)) > 0


async def test_a_long_body_is_kept_to_its_first_kibibyte(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    run_worker: RunWorker,
    receiver: tuple[Scripted, str],
) -> None:
    scripted, url = receiver
    scripted.replies = [(200, {}, "é" + "x" * 5000)]
    task_id = await queue_webhook(client, url, {"n": 1})

    await run_worker()

    [attempt] = (await status_of(client, task_id))["history"]
    delivery = attempt["delivery"]
    assert delivery["body_truncated"] is True
    assert len(delivery["body"].encode()) == 1024
    assert delivery["body"].startswith("éxxx")
    [raw] = await redis.lrange(keys.job_attempts(task_id), 0, -1)  # type: ignore[misc]
    print(f"bytes of one stored attempt with a 1 KiB ledger body: {len(raw)}")
    assert len(raw) < 1024 + 512


async def test_a_hanging_receiver_is_recorded_as_no_answer_after_the_timeout(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    receiver: tuple[Scripted, str],
) -> None:
    scripted, url = receiver
    scripted.replies = [None, (200, {}, "late but fine")]
    task_id = await queue_webhook(client, url, {"n": 1})

    await run_worker(settings.model_copy(update={"webhook_timeout": 0.3}))

    status = await status_of(client, task_id)
    assert status["status"] == "SUCCESS"
    hung, answered = status["history"]
    assert hung["outcome"] == "retry"
    assert hung["error"] == "webhook unreachable: timed out"
    assert hung["delivery"]["status"] is None
    assert 300 <= hung["delivery"]["duration_ms"] < 2000, "cut by WEBHOOK_TIMEOUT (0.3 s)"
    assert hung["delivery"]["headers"] == {}
    assert answered["delivery"]["status"] == 200
    assert answered["delivery"]["body"] == "late but fine"
    assert scripted.hits == 2


async def test_jobs_that_tell_no_delivery_have_none(
    client: TestClient[Any, Any], run_worker: RunWorker
) -> None:
    response = await client.post("/events", json={"event": "User logged in"})
    task_id = (await response.json())["task_id"]
    await run_worker()
    [attempt] = (await status_of(client, task_id))["history"]
    assert "delivery" not in attempt


def test_a_cut_json_body_still_has_its_secrets_masked() -> None:
    cut = '{"ok": false, "api_key": "abcdef012345", "password": "hunt'
    masked = mask_body(cut)
    assert "abcdef012345" not in masked
    assert "hunt" not in masked
    assert '"ok": false' in masked


def test_a_character_cut_at_the_kibibyte_is_left_out() -> None:
    head = ("x" * 1023 + "é").encode()[:1024]  # é's second byte is past the cut
    assert delivery_record(status=200, duration_ms=1, head=head, cut=True)["body"] == "x" * 1023


@pytest.mark.parametrize(
    "body",
    ["x" * 1024, "é" * 700, "\x00" * 1024, '"' * 1024, "\ufffd" * 1024],
    ids=["ascii", "accented", "control", "quotes", "binary-replaced"],
)
def test_no_body_makes_a_stored_entry_larger_than_its_cap(body: str) -> None:
    delivery = delivery_record(status=200, duration_ms=1)
    stored = stored_delivery({**delivery, "body": body})
    entry = attempts.encode(
        attempts.make_attempt(
            run=1, attempt=1, started_at=0, finished_at=1, outcome="success", delivery=stored
        )
    )
    assert stored_size(stored["body"]) <= BODY_MAX
    assert len(entry.encode()) <= BODY_MAX + 400
    assert body.startswith(stored["body"])
    assert stored["body_truncated"] is (stored["body"] != body)
