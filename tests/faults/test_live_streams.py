"""Hundreds of live streams against ``python -m web`` and a private redis-server: the streams
share one Redis subscription, the one over the cap is refused, and every stream still gets
its events. Redis's clients are counted with CLIENT LIST, which only a private server makes
meaningful."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from service.store import keys
from settings import Settings
from tests.conftest import AUTH_HEADERS
from tests.faults.conftest import Spawn
from tests.faults.processes import RedisServer
from tests.sse import all_events, next_event
from tests.waiting import wait_until

STARTUP = 30
JOBS = 100  # each followed by two streams, beside as many overview streams: 300 in all
CAP = 3 * JOBS
HANDFUL = 5  # Redis connections the streams may add, at most


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[aiohttp.ClientSession]:
    # no connection limit on the client side: every stream holds one connection
    async with aiohttp.ClientSession(
        f"http://127.0.0.1:{settings.web_port}",
        headers=AUTH_HEADERS,
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=120, sock_read=30),
    ) as session:
        yield session


@pytest.fixture
async def server(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url())
    yield client
    await client.aclose()


async def _clients(server: Redis) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = await server.client_list()
    return [c for c in listed if c.get("name") != "counter" and c.get("cmd") != "client|list"]


async def _web_up(http: aiohttp.ClientSession) -> bool:
    try:
        async with http.get("/health") as response:
            return response.status == 200
    except aiohttp.ClientConnectionError:
        return False


async def _queue(http: aiohttp.ClientSession, n: int) -> str:
    async with http.post("/events", json={"event": {"n": n}}) as response:
        assert response.status == 202, await response.text()
        task_id: str = (await response.json())["task_id"]
        return task_id


async def test_300_streams_share_one_subscription_and_the_next_is_refused(
    settings: Settings,
    redis_server: RedisServer,
    server: Redis,
    spawn: Spawn,
    http: aiohttp.ClientSession,
) -> None:
    await server.client_setname("counter")
    await spawn("web", live_streams_per_token=CAP, live_streams_per_process=CAP)
    await wait_until(lambda: _web_up(http), within=STARTUP, interval=0.1)
    task_ids = [await _queue(http, n) for n in range(JOBS)]  # no worker yet: all PENDING
    before = len(await _clients(server))

    streams = []
    for task_id in task_ids:
        for _ in range(2):
            stream = await http.get(f"/jobs/{task_id}/events")
            assert stream.status == 200, await stream.text()
            first = await asyncio.wait_for(next_event(stream), 10)
            assert first is not None
            assert first.data["status"] == "PENDING"
            streams.append(stream)
    overviews = []
    for _ in range(JOBS):
        overview = await http.get("/dashboard/events")
        assert overview.status == 200, await overview.text()
        assert await asyncio.wait_for(overview.content.readuntil(b"\n\n"), 10) == b": watching\n\n"
        overviews.append(overview)

    during = await _clients(server)
    assert len(during) - before <= HANDFUL, [c["cmd"] for c in during]
    subscribers = [c for c in during if int(c["sub"]) or int(c["psub"])]
    assert len(subscribers) == 1  # one subscription for the whole process
    assert int(subscribers[0]["sub"]) == JOBS  # one channel per job, whatever its streams
    assert int(subscribers[0]["psub"]) == 1  # one pattern for every overview

    refused = await http.get(f"/jobs/{task_ids[0]}/events")
    assert refused.status == 429
    assert refused.headers["Retry-After"].isdigit()
    assert "too many live streams" in (await refused.json())["error"]
    refused_overview = await http.get("/dashboard/events")
    assert refused_overview.status == 429

    # events still reach every stream: each job stream sees its job run, each overview a cue
    await spawn("worker")
    finished = await asyncio.wait_for(asyncio.gather(*(all_events(s) for s in streams)), 60)
    for events in finished:
        assert [e.data["status"] for e in events if e.kind == "status"][-1] == "SUCCESS"
    cues = await asyncio.wait_for(asyncio.gather(*(next_event(o) for o in overviews)), 30)
    assert all(cue is not None and cue.kind == "changed" for cue in cues)

    # everything recovers once they close
    for overview in overviews:
        overview.close()

    async def overview_unsubscribed() -> bool:
        return int(await server.pubsub_numpat()) == 0

    await wait_until(overview_unsubscribed, within=15, interval=0.1)
    channels = [keys.job_events(task_id, keys.database_of(server)) for task_id in task_ids]
    assert await server.pubsub_numsub(*channels) == [(c.encode(), 0) for c in channels]
    again = await http.get("/dashboard/events")
    assert again.status == 200
    again.close()
    assert len(await _clients(server)) - before <= HANDFUL
