"""Idempotency-Key on the enqueue endpoints: one job per key, replays answer 200 and do nothing."""

from __future__ import annotations

import asyncio
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.queue.idempotency import IdempotencyKey, StoredAnswer
from service.store.database import open_database
from service.store.subscriptions import SharedSubscriptions
from settings import Settings
from tests import files
from tests.conftest import AUTH_HEADERS, TEST_API_TOKEN, ClientFactory, queued
from tests.days import RECENT_DAY
from tests.images import image_bytes
from tests.waiting import wait_until
from web import create_app
from web.auth import token_fingerprint

EMAIL: dict[str, Any] = {"to": "ann@example.com", "subject": "Hello", "body": "Hi"}
OTHER_TOKEN = "other-token-0123456789abcdef"


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


async def post_image(
    client: TestClient[Any, Any], data: bytes, headers: dict[str, str]
) -> ClientResponse:
    form = aiohttp.FormData()
    form.add_field("file", data, filename="photo.png", content_type="image/png")
    response: ClientResponse = await client.post("/upload", data=form, headers=headers)
    return response


async def stored_files(settings: Settings) -> list[str]:
    return await files.names_in(settings.uploads_dir)


async def users(settings: Settings) -> int:
    db = await open_database(settings)
    try:
        return await db.count_registered(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC))
    finally:
        await db.close()


async def test_the_same_key_returns_the_same_task_with_200_and_queues_once(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    first = await client.post("/send-email", json=EMAIL, headers=key("order-42"))
    assert first.status == 202
    task_id = (await first.json())["task_id"]

    again = await client.post("/send-email", json=EMAIL, headers=key("order-42"))

    assert again.status == 200
    assert await again.json() == await first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == f"/task-status/{task_id}"
    assert await queued(redis, settings) == [task_id]


async def test_without_a_key_or_with_another_key_each_request_is_a_new_job(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    answers = [
        await client.post("/send-email", json=EMAIL),
        await client.post("/send-email", json=EMAIL),
        await client.post("/send-email", json=EMAIL, headers=key("a")),
        await client.post("/send-email", json=EMAIL, headers=key("b")),
    ]
    assert [answer.status for answer in answers] == [202] * 4
    assert len(await queued(redis, settings)) == 4


async def test_two_requests_racing_with_one_key_make_one_job(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    answers = await asyncio.gather(
        *(client.post("/send-email", json=EMAIL, headers=key("race")) for _ in range(5))
    )

    assert sorted(answer.status for answer in answers) == [200, 200, 200, 200, 202]
    ids = {(await answer.json())["task_id"] for answer in answers}
    assert len(ids) == 1
    assert await queued(redis, settings) == list(ids)


async def test_a_key_reused_with_a_different_body_is_422_and_changes_nothing(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    first = await client.post("/send-email", json=EMAIL, headers=key("k1"))
    task_id = (await first.json())["task_id"]

    other = await client.post("/send-email", json={**EMAIL, "subject": "Other"}, headers=key("k1"))

    assert other.status == 422
    assert "different request" in (await other.json())["error"]
    assert await queued(redis, settings) == [task_id]


async def test_a_key_reused_with_another_priority_is_422_and_queues_nothing(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    """The query string is part of the request: ``?priority=high`` is not the first send."""
    first = await client.post("/send-email", json=EMAIL, headers=key("k9"))
    assert first.status == 202
    again = await client.post("/send-email", json=EMAIL, headers=key("k9"))
    assert again.status == 200, "the same request still gets the first answer"
    other = await client.post(
        "/send-email", json=EMAIL, params={"priority": "high"}, headers=key("k9")
    )
    assert other.status == 422
    assert await redis.zcard(f"{settings.queue_name}:high") == 0
    assert await queued(redis, settings) == [(await first.json())["task_id"]]


async def test_a_key_on_another_endpoint_is_a_different_request(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    await client.post("/events", json={"event": {"a": 1}}, headers=key("k2"))
    other = await client.post("/webhooks", json={"event": {"a": 1}}, headers=key("k2"))
    assert other.status == 422
    assert len(await queued(redis, settings)) == 1


async def test_keys_belong_to_one_api_token(
    aiohttp_client: ClientFactory, redis: ArqRedis, settings: Settings
) -> None:
    both = settings.model_copy(update={"api_tokens": (TEST_API_TOKEN, OTHER_TOKEN)})
    ann = await aiohttp_client(
        create_app(both), headers={"Authorization": f"Bearer {TEST_API_TOKEN}"}
    )
    bob = await aiohttp_client(create_app(both), headers={"Authorization": f"Bearer {OTHER_TOKEN}"})

    first = await ann.post("/send-email", json=EMAIL, headers=key("shared"))
    second = await bob.post("/send-email", json=EMAIL, headers=key("shared"))

    assert (first.status, second.status) == (202, 202)
    assert (await first.json())["task_id"] != (await second.json())["task_id"]
    assert len(await queued(redis, settings)) == 2


async def test_a_refused_request_frees_its_key(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    bad = await client.post("/send-email", json={**EMAIL, "to": "nope"}, headers=key("k3"))
    assert bad.status == 400
    assert await queued(redis, settings) == []

    good = await client.post("/send-email", json=EMAIL, headers=key("k3"))
    assert good.status == 202


@pytest.mark.parametrize("value", ["", "x" * 256, "caf\u00e9", "tab\there"])
async def test_a_malformed_key_is_400_and_queues_nothing(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, value: str
) -> None:
    response = await client.post(
        "/send-email", json=EMAIL, headers={"Idempotency-Key": value.encode().decode("latin-1")}
    )
    assert response.status == 400
    assert "Idempotency-Key" in (await response.json())["error"]
    assert await queued(redis, settings) == []


async def test_a_repeated_upload_stores_no_second_file(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    picture = image_bytes((64, 48), "PNG")
    first = await post_image(client, picture, key("photo-1"))
    assert first.status == 202, await first.text()
    task_id = (await first.json())["task_id"]
    stored = await stored_files(settings)
    assert len(stored) == 1

    again = await post_image(client, picture, key("photo-1"))

    assert again.status == 200
    assert (await again.json())["task_id"] == task_id
    assert await stored_files(settings) == stored
    assert await queued(redis, settings) == [task_id]


async def test_a_different_file_under_a_used_key_is_422_and_stores_nothing(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    first = await post_image(client, image_bytes((64, 48), "PNG"), key("photo-2"))
    stored = await stored_files(settings)

    other = await post_image(client, image_bytes((32, 32), "PNG"), key("photo-2"))

    assert other.status == 422
    assert await stored_files(settings) == stored
    assert await queued(redis, settings) == [(await first.json())["task_id"]]


async def test_a_repeated_registration_creates_no_second_user(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    form = {"name": "Ann Lee", "email": "ann@example.com"}
    first = await client.post("/register", json=form, headers=key("signup-1"))
    assert first.status == 201

    again = await client.post("/register", json=form, headers=key("signup-1"))

    assert again.status == 200  # not 409 "already registered": it is the same request
    assert await again.json() == await first.json()
    assert await users(settings) == 1
    assert len(await queued(redis, settings)) == 1


async def test_the_key_is_forgotten_after_the_window(
    aiohttp_client: ClientFactory, redis: ArqRedis, settings: Settings
) -> None:
    short = settings.model_copy(update={"idempotency_ttl": 1})
    client = await aiohttp_client(
        create_app(short), headers={"Authorization": f"Bearer {TEST_API_TOKEN}"}
    )
    first = await client.post("/events", json={"event": {}}, headers=key("brief"))
    assert first.status == 202
    [stored] = await redis.keys("jobsvc:idem:*")
    assert 0 < await redis.ttl(stored) <= 1

    async def forgotten() -> bool:
        return not await redis.exists(stored)

    await wait_until(forgotten, within=5)
    later = await client.post("/events", json={"event": {}}, headers=key("brief"))
    assert later.status == 202
    assert (await later.json())["task_id"] != (await first.json())["task_id"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/send-email", EMAIL),
        ("/register", {"name": "Bo", "email": "bo@example.com"}),
        ("/events", {"event": {"type": "signup"}}),
        ("/webhooks", {"url": "http://127.0.0.1:9/hook", "payload": {"n": 1}}),
        ("/reports/daily", {"day": RECENT_DAY}),
    ],
)
async def test_every_json_enqueue_endpoint_honours_the_key(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    path: str,
    body: dict[str, Any],
) -> None:
    first = await client.post(path, json=body, headers=key(f"every{path}"))
    assert first.status in (201, 202), await first.text()

    again = await client.post(path, json=body, headers=key(f"every{path}"))

    assert again.status == 200
    assert (await again.json())["task_id"] == (await first.json())["task_id"]
    assert len(await queued(redis, settings)) == 1


async def _commands(server: Redis, *names: str) -> int:
    """How many of these commands the server has run since its stats were reset."""
    stats = await server.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in names)


async def test_a_repeat_waits_for_the_first_on_a_notice_not_by_polling_redis(
    aiohttp_client: ClientFactory,
    settings: Settings,
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """A private redis-server, so that its command counts are this test's alone."""
    server = Redis.from_url(private_redis[0], socket_timeout=2)

    async def answers() -> bool:
        try:
            return bool(await server.ping())
        except (RedisError, OSError):
            return False

    await wait_until(answers, within=10)
    own = settings.model_copy(update={"redis_url": private_redis[0]})
    client = await aiohttp_client(create_app(own), headers=AUTH_HEADERS)
    try:
        # the first request with the key is still running: its placeholder holds the key
        first = IdempotencyKey(
            server, SharedSubscriptions(server), token_fingerprint(TEST_API_TOKEN), "slow-one"
        )
        assert await first.claim(wait=0) is None
        await server.config_resetstat()
        repeat = asyncio.create_task(
            client.post("/send-email", json=EMAIL, headers=key("slow-one"))
        )
        await asyncio.sleep(1.5)  # the span whose commands are counted
        assert not repeat.done()
        # polling every 20 ms asked ~75 times; a waiter looks once, then once a second
        assert await _commands(server, "get", "set") <= 12  # the rate limiters' few included
        answer = StoredAnswer("fingerprint", "task-1", 202, {"task_id": "task-1"})
        settled = time.monotonic()
        await first.complete(answer, ttl=60)
        replayed = await asyncio.wait_for(repeat, 5)
        assert time.monotonic() - settled < 0.5  # woken by the notice, not by its next look
        assert replayed.status == 422  # the stored request differs: refused, not run again
        assert await server.zcard(own.queue_name) == 0
    finally:
        await server.aclose()
