"""Rate limits: per token and per recipient, 429 with Retry-After, shared through Redis."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.store.database import open_database
from settings import Settings
from tests.conftest import AUTH_HEADERS, ClientFactory, queued
from tests.waiting import wait_until
from web import create_app

EVENT = {"event": {"type": "ping"}}


def email_to(address: str) -> dict[str, Any]:
    return {"to": address, "subject": "Hi", "body": "hello"}


async def client_with(
    aiohttp_client: ClientFactory, settings: Settings, **limits: str | int
) -> TestClient[Any, Any]:
    app = create_app(settings.model_copy(update=limits))
    return await aiohttp_client(app, headers=AUTH_HEADERS)


async def test_a_token_over_its_limit_gets_429_then_recovers(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    client = await client_with(aiohttp_client, settings, rate_limit_per_token="3/second")
    for _ in range(3):
        assert (await client.post("/events", json=EVENT)).status == 202
    refused = await client.post("/events", json=EVENT)
    await assert_refused_after(refused, redis, settings, queued_before=3)
    assert 1 <= int(refused.headers["Retry-After"]) <= 1

    async def accepted_again() -> bool:
        response = await client.post("/events", json=EVENT)
        assert response.status in {202, 429}, await response.text()
        return response.status == 202

    await wait_until(accepted_again, within=5, interval=0.1)
    assert len(await queued(redis, settings)) == 4


async def assert_refused_after(
    response: Any, redis: ArqRedis, settings: Settings, *, queued_before: int
) -> None:
    assert response.status == 429, await response.text()
    assert response.content_type == "application/json"
    assert "too many requests for this token" in (await response.json())["error"]
    assert len(await queued(redis, settings)) == queued_before


async def test_each_token_has_its_own_budget_and_reads_count_too(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    other = "second-token-0123456789"
    own = settings.model_copy(
        update={"rate_limit_per_token": "2/hour", "api_tokens": (*settings.api_tokens, other)}
    )
    client = await aiohttp_client(create_app(own), headers=AUTH_HEADERS)
    assert (await client.get("/task-status/none")).status == 404
    assert (await client.post("/events", json=EVENT)).status == 202
    response = await client.post("/events", json=EVENT)
    await assert_refused_after(response, redis, settings, queued_before=1)
    assert 3500 < int(response.headers["Retry-After"]) <= 3600
    response = await client.post(
        "/events", json=EVENT, headers={"Authorization": f"Bearer {other}"}
    )
    assert response.status == 202
    assert (await client.get("/health")).status == 200, "public routes are not limited"


async def test_the_limit_holds_across_web_processes_sharing_redis(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    first = await client_with(aiohttp_client, settings, rate_limit_per_token="2/hour")
    second = await client_with(aiohttp_client, settings, rate_limit_per_token="2/hour")
    assert (await first.post("/events", json=EVENT)).status == 202
    assert (await second.post("/events", json=EVENT)).status == 202
    await assert_refused_after(
        await first.post("/events", json=EVENT), redis, settings, queued_before=2
    )
    await assert_refused_after(
        await second.post("/events", json=EVENT), redis, settings, queued_before=2
    )


async def test_one_recipient_cannot_be_mail_bombed_through_send_email(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    client = await client_with(aiohttp_client, settings, rate_limit_per_recipient="2/hour")
    assert (await client.post("/send-email", json=email_to("ann@example.com"))).status == 202
    assert (await client.post("/send-email", json=email_to("Ann@Example.com"))).status == 202
    response = await client.post("/send-email", json=email_to("ANN@example.com"))
    assert response.status == 429, await response.text()
    assert "too many requests for this recipient" in (await response.json())["error"]
    assert len(await queued(redis, settings)) == 2
    assert int(response.headers["Retry-After"]) > 3500
    assert (await client.post("/send-email", json=email_to("bob@example.com"))).status == 202
    assert len(await queued(redis, settings)) == 3


async def test_registration_counts_against_the_welcome_emails_recipient(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    client = await client_with(aiohttp_client, settings, rate_limit_per_recipient="1/hour")
    assert (await client.post("/send-email", json=email_to("eve@example.com"))).status == 202
    response = await client.post("/register", json={"name": "Eve", "email": "eve@example.com"})
    assert response.status == 429, await response.text()
    assert "Retry-After" in response.headers
    assert len(await queued(redis, settings)) == 1
    db = await open_database(settings)
    try:
        assert await db.get_user(1) is None, "a refused registration creates no user"
    finally:
        await db.close()


async def test_an_empty_limit_switches_it_off(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    client = await client_with(
        aiohttp_client,
        settings,
        rate_limit_per_token="",
        rate_limit_per_recipient="",
        payload_quota_per_token=0,
    )
    for _ in range(5):
        assert (await client.post("/send-email", json=email_to("a@example.com"))).status == 202
    assert await redis.keys("jobsvc:ratelimit*") == []


@pytest.mark.parametrize("value", ["lots", "5/fortnight", "5 per"])
def test_an_unreadable_limit_stops_the_settings(value: str) -> None:
    with pytest.raises(ValueError, match="not a rate limit like"):
        Settings(rate_limit_per_token=value)
