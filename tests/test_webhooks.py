"""deliver_webhook end to end: API -> Redis -> real worker -> real local HTTP target -> status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.connections import ArqRedis
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpServer

from jobs.webhooks import JOB as WEBHOOK
from jobs.webhooks import MAX_RETRY_AFTER, parse_retry_after
from service.runtime import JobContext, TransientError
from service.worker.tracking import retry_delay
from settings import Settings
from tests.conftest import RunWorker, assert_refused, free_port, queued, status_of

PAYLOAD: dict[str, Any] = {"event": "order.paid", "order": {"id": 42, "items": ["a", "b"]}}


@dataclass(frozen=True)
class Reply:
    """One scripted answer; ``hang`` keeps the request open until the test ends."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


@dataclass(frozen=True)
class Received:
    path: str
    headers: CIMultiDict[str]
    body: Any
    at: float  # time.monotonic() when the request arrived


@dataclass
class WebhookTarget:
    """A real aiohttp server that records each request and answers from ``replies`` (then 200)."""

    replies: list[Reply] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    server: TestServer | None = None

    def url(self, path: str = "/hook") -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    def hits(self, path: str = "/hook") -> list[Received]:
        return [request for request in self.received if request.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.received.append(
            Received(request.path, CIMultiDict(request.headers), body, time.monotonic())
        )
        reply = self.replies.pop(0) if self.replies else Reply()
        if reply.hang:
            await self.release.wait()
        return web.json_response(
            {"ok": reply.status < 400}, status=reply.status, headers=reply.headers
        )


@pytest.fixture
async def target(aiohttp_server: AiohttpServer) -> AsyncIterator[WebhookTarget]:
    recorder = WebhookTarget()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    recorder.server = await aiohttp_server(app)
    try:
        yield recorder
    finally:
        # Hung handlers must finish before aiohttp_server closes the server.
        recorder.release.set()


async def post_webhook(
    client: TestClient[Any, Any], url: str, payload: dict[str, Any] | list[Any] = PAYLOAD
) -> str:
    response = await client.post("/webhooks", json={"url": url, "payload": payload})
    assert response.status == 202, await response.text()
    body = await response.json()
    assert body["message"] == "Webhook queued!"
    assert response.headers["Location"] == f"/task-status/{body['task_id']}"
    task_id: str = body["task_id"]
    return task_id


def job_ctx(settings: Settings, job_try: int) -> JobContext:
    """The two ctx fields retry_delay reads."""
    return cast(JobContext, {"settings": settings, "job_try": job_try})


# --- delivery ----------------------------------------------------------------------------


async def test_webhook_is_posted_once_with_json_and_idempotency_key(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
    target: WebhookTarget,
) -> None:
    task_id = await post_webhook(client, target.url())
    assert await queued(redis, settings) == [task_id]
    pending = await status_of(client, task_id)
    assert pending["status"] == "PENDING"
    assert pending["function"] == "deliver_webhook"
    assert target.received == [], "nothing is sent before a worker runs"

    await run_worker()

    assert len(target.received) == 1
    request = target.received[0]
    assert request.path == "/hook"
    assert request.body == PAYLOAD
    assert request.headers["Content-Type"].split(";")[0] == "application/json"
    assert request.headers["Idempotency-Key"] == task_id
    assert request.headers["User-Agent"] == "jobservice-webhooks/1"
    done = await status_of(client, task_id)
    assert done["status"] == "SUCCESS"
    assert done["attempts"] == 1
    result = done["result"]
    assert set(result) == {"status", "attempts", "elapsed_ms"}
    assert result["status"] == 200
    assert result["attempts"] == 1
    assert type(result["elapsed_ms"]) is int
    assert result["elapsed_ms"] >= 0
    assert await queued(redis, settings) == []


async def test_a_json_array_payload_is_delivered_as_is(
    client: TestClient[Any, Any], run_worker: RunWorker, target: WebhookTarget
) -> None:
    payload: list[Any] = [1, "two", {"three": None}, [], True]
    task_id = await post_webhook(client, target.url(), payload)

    await run_worker()

    assert [request.body for request in target.received] == [payload]
    assert (await status_of(client, task_id))["status"] == "SUCCESS"


async def test_5xx_is_retried_with_the_same_idempotency_key(
    client: TestClient[Any, Any], run_worker: RunWorker, target: WebhookTarget
) -> None:
    target.replies = [Reply(503)]
    task_id = await post_webhook(client, target.url())

    await run_worker()

    assert len(target.received) == 2
    assert [request.headers["Idempotency-Key"] for request in target.received] == [task_id] * 2
    assert [request.body for request in target.received] == [PAYLOAD, PAYLOAD]
    done = await status_of(client, task_id)
    assert done["status"] == "SUCCESS"
    assert done["attempts"] == 2
    assert done["result"]["status"] == 200
    assert done["result"]["attempts"] == 2


async def test_5xx_on_every_attempt_gives_up_after_max_tries(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    target: WebhookTarget,
) -> None:
    target.replies = [Reply(500)] * settings.job_max_tries
    task_id = await post_webhook(client, target.url())

    await run_worker()

    assert len(target.received) == settings.job_max_tries
    failed = await status_of(client, task_id)
    assert failed["status"] == "FAILURE"
    assert failed["attempts"] == settings.job_max_tries
    assert "gave up after 3 attempts" in failed["error"]
    assert "webhook answered 500" in failed["error"]


async def test_429_with_retry_after_zero_is_retried(
    client: TestClient[Any, Any], run_worker: RunWorker, target: WebhookTarget
) -> None:
    target.replies = [Reply(429, {"Retry-After": "0"})]
    task_id = await post_webhook(client, target.url())

    await run_worker()

    assert len(target.received) == 2
    done = await status_of(client, task_id)
    assert done["status"] == "SUCCESS"
    assert done["attempts"] == 2


async def test_retry_after_delays_the_next_attempt(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    target: WebhookTarget,
) -> None:
    # Backoff alone would be ~10 ms; the server's Retry-After: 1 must win.
    patient = settings.model_copy(update={"retry_backoff_max": 5.0})
    target.replies = [Reply(503, {"Retry-After": "1"})]
    task_id = await post_webhook(client, target.url())

    await run_worker(patient)

    assert len(target.received) == 2
    # arq scores are whole milliseconds, so allow a millisecond of rounding
    assert target.received[1].at - target.received[0].at >= 0.999
    assert (await status_of(client, task_id))["attempts"] == 2


async def test_retry_after_beyond_the_backoff_cap_is_capped(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    target: WebhookTarget,
) -> None:
    # Retry-After: 3600 would outlast the test's timeout unless capped at retry_backoff_max.
    assert settings.retry_backoff_max < 1
    target.replies = [Reply(429, {"Retry-After": "3600"})]
    task_id = await post_webhook(client, target.url())

    await run_worker()

    assert len(target.received) == 2
    assert target.received[1].at - target.received[0].at < 5
    assert (await status_of(client, task_id))["status"] == "SUCCESS"


async def test_unparsable_retry_after_still_retries(
    client: TestClient[Any, Any], run_worker: RunWorker, target: WebhookTarget
) -> None:
    target.replies = [Reply(503, {"Retry-After": "²"})]
    task_id = await post_webhook(client, target.url())

    await run_worker()

    assert len(target.received) == 2
    done = await status_of(client, task_id)
    assert done["status"] == "SUCCESS", done
    assert done["attempts"] == 2


@pytest.mark.parametrize("status", [400, 404, 410])
async def test_4xx_fails_at_once_naming_the_status(
    client: TestClient[Any, Any], run_worker: RunWorker, target: WebhookTarget, status: int
) -> None:
    target.replies = [Reply(status)] * 3
    task_id = await post_webhook(client, target.url())

    await run_worker()

    assert len(target.received) == 1, "a 4xx answer must not be retried"
    failed = await status_of(client, task_id)
    assert failed["status"] == "FAILURE"
    assert failed["attempts"] == 1
    assert f"webhook answered {status}" in failed["error"]
    assert "not retried" in failed["error"]


async def test_redirect_is_not_followed_and_fails_the_delivery(
    client: TestClient[Any, Any], run_worker: RunWorker, target: WebhookTarget
) -> None:
    # A redirect means the payload was not delivered; following it could lead anywhere.
    target.replies = [Reply(302, {"Location": target.url("/elsewhere")})]
    task_id = await post_webhook(client, target.url())

    await run_worker()

    assert [request.path for request in target.received] == ["/hook"]
    assert target.hits("/elsewhere") == []
    failed = await status_of(client, task_id)
    assert failed["status"] == "FAILURE"
    assert failed["attempts"] == 1
    assert "webhook answered 302" in failed["error"]
    assert "redirects are not followed" in failed["error"]


async def test_connection_refused_is_retried_then_fails_with_reason(
    client: TestClient[Any, Any], settings: Settings, run_worker: RunWorker
) -> None:
    task_id = await post_webhook(client, f"http://127.0.0.1:{free_port()}/hook")

    await run_worker()

    failed = await status_of(client, task_id)
    assert failed["status"] == "FAILURE"
    assert failed["attempts"] == settings.job_max_tries
    assert "gave up after 3 attempts" in failed["error"]
    assert "webhook unreachable" in failed["error"]


async def test_hanging_target_is_cut_by_the_timeout_and_retried(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    target: WebhookTarget,
) -> None:
    impatient = settings.model_copy(update={"webhook_timeout": 0.3})
    target.replies = [Reply(hang=True)] * settings.job_max_tries
    task_id = await post_webhook(client, target.url())

    started = time.monotonic()
    await run_worker(impatient)
    took = time.monotonic() - started

    assert len(target.received) == settings.job_max_tries
    assert not target.release.is_set(), "no attempt may have been answered"
    assert took < 5, "each attempt must be cut after webhook_timeout (0.3 s), not 2 s or more"
    failed = await status_of(client, task_id)
    assert failed["status"] == "FAILURE"
    assert failed["attempts"] == settings.job_max_tries
    assert "gave up after 3 attempts" in failed["error"]
    assert "webhook unreachable: timed out" in failed["error"]


# --- retry policy and Retry-After parsing --------------------------------------------------


def test_retry_delay_honours_retry_after(settings: Settings) -> None:
    roomy = settings.model_copy(update={"retry_backoff_max": 300.0})
    delay = retry_delay(job_ctx(roomy, 1), TransientError("x", retry_after=30), WEBHOOK)
    assert delay >= 30
    assert delay == 30  # backoff for the first try is ~10 ms here, so Retry-After decides


def test_retry_delay_caps_retry_after_at_backoff_max(settings: Settings) -> None:
    roomy = settings.model_copy(update={"retry_backoff_max": 300.0})
    delay = retry_delay(job_ctx(roomy, 1), TransientError("x", retry_after=1000), WEBHOOK)
    assert delay == 300


def test_retry_delay_keeps_the_longer_backoff(settings: Settings) -> None:
    slow = settings.model_copy(update={"retry_backoff_base": 2.0, "retry_backoff_max": 300.0})
    # third try: the exponential step is 8 s, equal jitter keeps it within [4, 8]
    assert 4 <= retry_delay(job_ctx(slow, 3), TransientError("x", retry_after=1), WEBHOOK) <= 8
    assert 4 <= retry_delay(job_ctx(slow, 3), TransientError("x"), WEBHOOK) <= 8


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("0", 0.0), ("30", 30.0), (" 120 ", 120.0), ("99999", MAX_RETRY_AFTER)],
)
def test_parse_retry_after_delta_seconds(header: str, seconds: float) -> None:
    assert parse_retry_after(header) == seconds


def test_parse_retry_after_http_date() -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    seconds = parse_retry_after(soon)
    assert seconds is not None
    assert 55 <= seconds <= 60
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(past) == 0.0
    far = format_datetime(datetime.now(UTC) + timedelta(days=2), usegmt=True)
    assert parse_retry_after(far) == MAX_RETRY_AFTER


@pytest.mark.parametrize("header", [None, "", "   ", "soon", "-5", "1.5", "²", "Wed, 99 Foo"])
def test_parse_retry_after_garbage_is_none(header: str | None) -> None:
    assert parse_retry_after(header) is None


# --- bad requests --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"payload": PAYLOAD}, "url: Field required"),
        ({"url": "http://127.0.0.1/hook"}, "payload: Field required"),
        ({"url": "ftp://127.0.0.1/hook", "payload": PAYLOAD}, "absolute http:// or https://"),
        ({"url": "javascript:alert(1)", "payload": PAYLOAD}, "absolute http:// or https://"),
        ({"url": "/hook", "payload": PAYLOAD}, "absolute http:// or https://"),
        ({"url": "127.0.0.1/hook", "payload": PAYLOAD}, "absolute http:// or https://"),
        ({"url": "http://", "payload": PAYLOAD}, "url"),
        ({"url": 5, "payload": PAYLOAD}, "url: Input should be"),
        ({"url": "http://127.0.0.1/hook", "payload": "text"}, "payload"),
        ({"url": "http://127.0.0.1/hook", "payload": 5}, "payload"),
        ({"url": "http://127.0.0.1/hook", "payload": None}, "payload"),
        ({"url": "http://127.0.0.1/hook", "payload": PAYLOAD, "method": "PUT"}, "method"),
    ],
)
async def test_bad_webhook_requests_are_400_and_queue_nothing(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    body: dict[str, Any],
    reason: str,
) -> None:
    response = await client.post("/webhooks", json=body)
    await assert_refused(response, 400, reason, redis, settings)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"url": "http://127.0.0.1/hook", "payload": {', "valid JSON"),
        (b"", "valid JSON"),
        (b'[{"url": "http://127.0.0.1/hook"}]', "JSON object"),
    ],
)
async def test_malformed_webhook_json_is_400(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, raw: bytes, reason: str
) -> None:
    response = await client.post(
        "/webhooks", data=raw, headers={"Content-Type": "application/json"}
    )
    await assert_refused(response, 400, reason, redis, settings)
