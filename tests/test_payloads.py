"""What a client's payload makes Redis keep (issue 18.2): a limit per route (413), a quota of
queued bytes per token (429), no arguments in a stored result, a bounded copy in the
failed-jobs list; and the issue's numbers, 100 requests of 1 MiB, measured on a private Redis."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.engine.arq_api import result_key_prefix
from service.store.redis import open_pool
from settings import Settings
from tests.conftest import (
    AUTH_HEADERS,
    TEST_API_TOKEN,
    ClientFactory,
    RunWorker,
    assert_refused,
    queued,
    status_of,
)
from tests.dashboard_client import Dashboard
from tests.webhook_targets import ServerFactory, hook_url, queue_webhook
from web import create_app

MiB = 1024 * 1024
OTHER_TOKEN = "other-token-0123456789abcdef"


def webhook_body(url: str, size: int) -> bytes:
    """A ``POST /webhooks`` body of exactly ``size`` bytes."""
    empty = json.dumps({"url": url, "payload": {"data": ""}}).encode()
    return json.dumps({"url": url, "payload": {"data": "x" * (size - len(empty))}}).encode()


async def answer(status: int) -> Any:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({}, status=status)

    return handler


async def test_a_webhook_over_its_payload_limit_is_refused_and_nothing_is_queued(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, aiohttp_server: ServerFactory
) -> None:
    url = await hook_url(aiohttp_server, await answer(200))
    limit = settings.webhook_max_payload_bytes
    headers = {"Content-Type": "application/json"}

    over = await client.post("/webhooks", data=webhook_body(url, limit + 1), headers=headers)
    await assert_refused(over, 413, f"the limit is {limit}", redis, settings)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
        yield webhook_body(url, limit + 1)

    chunked = await client.post("/webhooks", data=chunks(), headers=headers)
    await assert_refused(chunked, 413, f"the limit is {limit}", redis, settings)

    body = {"function": "deliver_webhook", "kwargs": {"url": url, "payload": ["x" * limit]}}
    through_jobs = await client.post("/jobs", json=body)
    await assert_refused(through_jobs, 413, f"the limit is {limit}", redis, settings)

    at_limit = await client.post("/webhooks", data=webhook_body(url, limit), headers=headers)
    assert at_limit.status == 202, await at_limit.text()


async def test_an_event_over_its_payload_limit_is_refused(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    limit = settings.event_max_payload_bytes
    response = await client.post("/events", json={"event": {"data": "x" * limit}})
    await assert_refused(response, 413, f"the limit is {limit}", redis, settings)
    assert (await client.post("/events", json={"event": {"data": "x" * 100}})).status == 202


async def test_a_token_over_its_payload_quota_gets_429_and_nothing_is_queued(
    aiohttp_client: ClientFactory,
    redis: ArqRedis,
    settings: Settings,
    aiohttp_server: ServerFactory,
) -> None:
    limited = settings.model_copy(
        update={
            "api_tokens": (TEST_API_TOKEN, OTHER_TOKEN),
            "webhook_max_payload_bytes": 8192,
            "event_max_payload_bytes": 4096,
            "payload_quota_per_token": 20_000,
        }
    )
    app = create_app(limited)
    client = await aiohttp_client(app, headers=AUTH_HEADERS)
    url = await hook_url(aiohttp_server, await answer(200))
    headers = {"Content-Type": "application/json"}
    for _ in range(2):  # 16,000 of its 20,000 bytes
        response = await client.post("/webhooks", data=webhook_body(url, 8000), headers=headers)
        assert response.status == 202, await response.text()

    over = await client.post("/webhooks", data=webhook_body(url, 8000), headers=headers)
    assert int(over.headers["Retry-After"]) >= 1
    assert over.status == 429
    assert "quota" in (await over.json())["error"]
    assert len(await queued(redis, settings)) == 2

    other = {"Authorization": f"Bearer {OTHER_TOKEN}", **headers}
    response = await client.post("/webhooks", data=webhook_body(url, 8000), headers=other)
    assert response.status == 202, "each token has a quota of its own"


def test_a_quota_below_one_payload_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="PAYLOAD_QUOTA_PER_TOKEN"):
        Settings(payload_quota_per_token=1000)


async def test_a_result_keeps_no_arguments_and_the_status_still_works(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    run_worker: RunWorker,
    aiohttp_server: ServerFactory,
) -> None:
    url = await hook_url(aiohttp_server, await answer(200))
    task_id = await queue_webhook(client, url, {"data": "y" * 50_000})
    await run_worker()

    stored = json.loads(await redis.get(result_key_prefix + task_id))
    assert (stored["a"], stored["k"]) == ([], {})
    status = await status_of(client, task_id)
    assert status["status"] == "SUCCESS"
    assert status["result"]["status"] == 200


async def test_the_failed_list_keeps_a_bounded_copy_which_is_not_retried(
    client: TestClient[Any, Any],
    aiohttp_client: ClientFactory,
    redis: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
    aiohttp_server: ServerFactory,
) -> None:
    url = await hook_url(aiohttp_server, await answer(400))
    large = await queue_webhook(client, url, {"data": "z" * 50_000, "keep": "me"})
    small = await queue_webhook(client, url, {"data": "small"})
    await run_worker()

    listing = await (await client.get("/jobs/failed")).json()
    listed = {job["task_id"]: job for job in listing["jobs"]}
    limit = settings.dead_letter_max_argument_bytes
    cut = listed[large]
    assert cut["arguments_truncated"] is True
    assert len(json.dumps([cut["args"], cut["kwargs"]]).encode()) <= limit
    assert cut["kwargs"]["payload"]["keep"] == "me"
    assert cut["kwargs"]["payload"]["data"].startswith("zzz")
    assert listed[small]["arguments_truncated"] is False
    assert listed[small]["kwargs"]["payload"] == {"data": "small"}

    board = Dashboard(await aiohttp_client(create_app(settings)))
    assert (await board.sign_in()).status == 303
    overview = await board.page("/dashboard")
    assert f"/dashboard/jobs/{small}/retry" in overview
    assert f"/dashboard/jobs/{large}/retry" not in overview, "no Retry for a cut copy"
    assert f"/dashboard/jobs/{large}/delete" in overview

    refused = await client.post(f"/jobs/{large}/retry")
    await assert_refused(refused, 409, "too large to keep whole", redis, settings)
    assert (await client.post(f"/jobs/{small}/retry")).status == 202


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("answer_status", "outcome"), [(200, "SUCCESS"), (400, "FAILURE")])
async def test_100_requests_of_1_mib_keep_kilobytes_not_megabytes(
    answer_status: int,
    outcome: str,
    aiohttp_client: ClientFactory,
    settings: Settings,
    private_redis: tuple[str, subprocess.Popen[bytes]],
    run_worker: RunWorker,
    aiohttp_server: ServerFactory,
) -> None:
    """The issue's numbers: 100 webhooks of 1 MiB grew Redis by 125 MiB for a day (a copy in
    each result), 250 MiB for a week when they failed (and one in the failed-jobs list)."""
    url, _ = private_redis
    hook = await hook_url(aiohttp_server, await answer(answer_status))
    headers = {"Content-Type": "application/json"}
    body = webhook_body(hook, MiB)
    on_private = settings.model_copy(update={"redis_url": url, "payload_quota_per_token": 0})
    private = await open_pool(on_private)

    async def dataset() -> int:
        """The dataset's size. Redis reports it as its used memory less its overhead, an
        unsigned subtraction that wraps round (to ~1.8e19) while the overhead, the clients'
        freed 1 MiB buffers among it, briefly exceeds the used memory: then read again."""
        for _ in range(50):
            await private.execute_command("MEMORY", "PURGE")
            memory = await private.info("memory")
            if int(memory["used_memory_dataset"]) <= int(memory["used_memory"]):
                return int(memory["used_memory_dataset"])
            await asyncio.sleep(0.1)
        raise AssertionError("Redis reported no dataset size below its used memory in 5 s")

    try:
        # the defaults: refused at the door, nothing kept
        client = await aiohttp_client(create_app(on_private), headers=AUTH_HEADERS)
        before = await dataset()
        for _ in range(100):
            assert (await client.post("/webhooks", data=body, headers=headers)).status == 413
        refused = await dataset() - before
        assert refused < MiB, "100 MiB sent, under 1 MiB kept (rate-limit counters, scripts)"

        # a limit that lets them in: held while queued, a bounded copy once done
        roomy = on_private.model_copy(update={"webhook_max_payload_bytes": 2 * MiB})
        client = await aiohttp_client(create_app(roomy), headers=AUTH_HEADERS)
        await queue_webhook(client, hook, {"warm": "up"})  # scripts loaded, keys created
        await run_worker(roomy)
        before = await dataset()
        task_ids = []
        for _ in range(100):
            response = await client.post("/webhooks", data=body, headers=headers)
            assert response.status == 202
            task_ids.append((await response.json())["task_id"])
        held = await dataset() - before
        await run_worker(roomy)
        kept = await dataset() - before
        for task_id in task_ids[::10]:
            assert (await status_of(client, task_id))["status"] == outcome
    finally:
        await private.aclose(close_connection_pool=True)
    print(
        f"1 MiB webhooks: {refused // 100} bytes kept each when refused, {held // 100} while"
        f" queued, {kept // 100} once done ({outcome})"
    )
    assert held > 100 * MiB
    assert kept < 100 * 16 * 1024, f"{kept // 100} bytes kept per request"


async def test_a_request_over_the_quota_uses_up_no_recipient_limit(
    aiohttp_client: ClientFactory, redis: ArqRedis, settings: Settings
) -> None:
    limited = settings.model_copy(
        update={
            "webhook_max_payload_bytes": 8192,
            "event_max_payload_bytes": 4096,
            "payload_quota_per_token": 20_000,
            "rate_limit_per_recipient": "2/hour",
        }
    )
    client = await aiohttp_client(create_app(limited), headers=AUTH_HEADERS)
    email = {"to": "ann@example.com", "subject": "Hi"}
    assert (await client.post("/send-email", json={**email, "body": "x" * 15_000})).status == 202
    over = await client.post("/send-email", json={**email, "body": "y" * 15_000})
    assert over.status == 429
    assert "quota" in (await over.json())["error"]
    small = await client.post("/send-email", json={**email, "body": "z"})
    assert small.status == 202, "the refused email did not count against ann's 2/hour"
    assert len(await queued(redis, settings)) == 2
