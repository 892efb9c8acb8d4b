"""A Redis at its ``maxclients``: every route that needs Redis answers 503 with a JSON error
(never 500, never a hang), nothing is queued, and all works again once clients leave."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from settings import Settings
from tests.conftest import AUTH_HEADERS, ClientFactory
from tests.faults.processes import RedisServer
from web.app import create_app

NO_TASK = "0" * 32
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", f"/task-status/{NO_TASK}", None),
    ("POST", "/send-email", {"to": "ann@example.com", "subject": "Hi", "body": "Hi"}),
    ("POST", "/events", {"event": {}}),
    ("POST", "/register", {"name": "Ann", "email": "ann@example.com"}),
    ("GET", "/jobs/failed", None),
    ("GET", f"/jobs/{NO_TASK}/events", None),
    ("POST", f"/jobs/{NO_TASK}/retry", None),
    ("DELETE", f"/jobs/{NO_TASK}", None),
    ("GET", "/metrics", None),
    ("GET", "/dashboard", None),
]


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url())
    await client.ping()
    yield client
    await client.aclose()


async def _fill_up(port: int) -> list[asyncio.StreamWriter]:
    """Connections that hold every free client slot, up to the first one refused."""
    held: list[asyncio.StreamWriter] = []
    for _ in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PING\r\n")
        reply = await asyncio.wait_for(reader.readline(), 5)
        if reply.startswith(b"-ERR max number of clients reached"):
            writer.close()
            return held
        assert reply == b"+PONG\r\n"
        held.append(writer)
    raise AssertionError("Redis never refused a client")


async def test_a_redis_at_its_client_limit_gives_503_json_and_nothing_is_queued(
    aiohttp_client: ClientFactory, settings: Settings, redis_server: RedisServer, admin: Redis
) -> None:
    await admin.config_set("maxclients", 4)
    held = await _fill_up(redis_server.port)
    client = await aiohttp_client(create_app(settings), headers=AUTH_HEADERS)
    try:
        for method, path, body in ROUTES:
            answer = await asyncio.wait_for(client.request(method, path, json=body), 10)
            assert answer.status == 503, (method, path, answer.status, await answer.text())
            assert "unavailable" in (await answer.json())["error"], (method, path)
            assert answer.headers["Retry-After"] == "5"
        health = await client.get("/health")
        assert health.status == 503
        assert (await health.json())["redis"] == "unreachable"
    finally:
        for writer in held:
            writer.close()
    assert await admin.zcard(settings.queue_name) == 0
    accepted = await client.post("/events", json={"event": {}})  # the slots are free again
    assert accepted.status == 202, await accepted.text()
    assert await admin.zcard(settings.queue_name) == 1


async def test_a_flood_of_requests_opens_no_more_than_web_redis_max_connections(
    aiohttp_client: ClientFactory, settings: Settings, admin: Redis
) -> None:
    bound = 5
    flooded = settings.model_copy(update={"web_redis_max_connections": bound})
    client = await aiohttp_client(
        create_app(flooded), headers=AUTH_HEADERS, connector=aiohttp.TCPConnector(limit=0)
    )
    peak = 0

    async def count_clients() -> None:
        nonlocal peak
        while True:  # until cancelled once the flood is answered
            peak = max(peak, len(await admin.client_list()) - 1)  # this counter not counted
            await asyncio.sleep(0.005)

    async def request(n: int) -> int:
        async with client.post("/events", json={"event": {"n": n}}) as answer:
            await answer.read()
            return answer.status

    counter = asyncio.create_task(count_clients())
    try:
        statuses = await asyncio.wait_for(asyncio.gather(*(request(n) for n in range(500))), 60)
    finally:
        counter.cancel()
    assert set(statuses) <= {202, 503}, sorted(set(statuses))  # never a 500
    assert statuses.count(202) > 0
    assert 0 < peak <= bound  # unbounded, this flood took about 40 connections
    assert await admin.zcard(settings.queue_name) == statuses.count(202)
