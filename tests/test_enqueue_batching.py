"""Concurrent enqueues share Redis round trips (store.autopipeline), and nothing else changes:
every 202 names a job that is in Redis, and a Redis failure still answers 503 and queues nothing.

These tests use a redis-server of their own, so they can count its connections, fill its
memory and kill it without harming other tests.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from arq.jobs import Job
from redis.exceptions import RedisError

from service.queue.enqueue import enqueue, enqueue_job
from service.store.redis import open_pool
from service.store.serialization import deserialize
from settings import Settings
from tests.conftest import AUTH_HEADERS, ClientFactory
from tests.waiting import wait_until
from web import create_app

BURST = 40


@pytest.fixture
async def own_redis(
    settings: Settings, private_redis: tuple[str, subprocess.Popen[bytes]]
) -> AsyncIterator[tuple[Settings, ArqRedis, subprocess.Popen[bytes]]]:
    """Settings that point at a private redis-server, a client of it for checks, its process."""
    url, process = private_redis
    # no rate limits nor payload quota: their counters would be Redis calls of their own, one
    # per request
    update = {
        "redis_url": url,
        "rate_limit_per_token": "",
        "rate_limit_per_recipient": "",
        "payload_quota_per_token": 0,
    }
    own = settings.model_copy(update=update)
    checker = await open_pool(own)

    async def answers() -> bool:
        try:
            return bool(await checker.ping())
        except RedisError:
            return False

    await wait_until(answers)
    yield own, checker, process
    await checker.aclose(close_connection_pool=True)


async def _burst(client: TestClient[Any, Any], count: int = BURST) -> list[tuple[int, Any]]:
    """``count`` emails sent at once, each to its own address: (status, JSON body) of each."""

    async def send(n: int) -> tuple[int, Any]:
        body = {"to": f"user{n}@example.com", "subject": f"s{n}", "body": f"b{n}"}
        response = await client.post("/send-email", json=body)
        return response.status, await response.json()

    return list(await asyncio.gather(*(send(n) for n in range(count))))


async def _connected_clients(redis: ArqRedis) -> int:
    info = await redis.info("clients")
    return int(info["connected_clients"])


async def test_a_burst_of_requests_lands_whole_over_one_connection(
    aiohttp_client: ClientFactory,
    own_redis: tuple[Settings, ArqRedis, subprocess.Popen[bytes]],
) -> None:
    settings, checker, _ = own_redis
    client = await aiohttp_client(create_app(settings), headers=AUTH_HEADERS)
    answers = await _burst(client)

    assert [status for status, _ in answers] == [202] * BURST
    ids = [body["task_id"] for _, body in answers]
    assert len(set(ids)) == BURST
    assert sorted(await checker.zrange(settings.queue_name, 0, -1)) == sorted(
        task_id.encode() for task_id in ids
    )
    for n, task_id in enumerate(ids):  # each answer names its own request's job
        info = await Job(task_id, checker, _deserializer=deserialize).info()
        assert info is not None
        assert info.function == "send_email"
        assert info.kwargs["to"] == f"user{n}@example.com"
        assert info.kwargs["subject"] == f"s{n}"
    # one enqueue at a time would have needed a connection per request in flight; batched,
    # the app used one (the other is the checker's)
    assert await _connected_clients(checker) == 2


async def test_a_payload_quota_counts_in_the_enqueues_own_call(
    aiohttp_client: ClientFactory,
    own_redis: tuple[Settings, ArqRedis, subprocess.Popen[bytes]],
) -> None:
    """With PAYLOAD_QUOTA_PER_TOKEN set, a request still sends Redis one script call: the
    quota's count goes as the gate of the enqueue's script (service.store.scripts.gated)."""
    settings, checker, _ = own_redis
    quota = settings.model_copy(update={"payload_quota_per_token": 1_000_000})
    client = await aiohttp_client(create_app(quota), headers=AUTH_HEADERS)
    assert (await client.post("/events", json={"event": {"n": 0}})).status == 202  # loads it
    await checker.config_resetstat()

    assert (await client.post("/events", json={"event": {"n": 1}})).status == 202

    stats = await checker.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 1
    assert "cmdstat_eval" not in stats
    assert await checker.zcard(settings.queue_name) == 2
    counted = await checker.keys("jobsvc:ratelimit:payload:*")
    assert len(counted) == 1
    assert int(await checker.get(counted[0])) > 0  # both bodies counted


async def test_a_batch_reloads_the_script_when_redis_forgot_it(
    aiohttp_client: ClientFactory,
    own_redis: tuple[Settings, ArqRedis, subprocess.Popen[bytes]],
) -> None:
    settings, checker, _ = own_redis
    client = await aiohttp_client(create_app(settings), headers=AUTH_HEADERS)
    assert {status for status, _ in await _burst(client)} == {202}
    await checker.script_flush()  # as after a Redis restart

    answers = await _burst(client)
    assert {status for status, _ in answers} == {202}
    assert await checker.zcard(settings.queue_name) == 2 * BURST  # each queued once


async def test_redis_refusing_a_batch_answers_503_to_every_request_and_queues_none(
    aiohttp_client: ClientFactory,
    own_redis: tuple[Settings, ArqRedis, subprocess.Popen[bytes]],
) -> None:
    settings, checker, _ = own_redis
    client = await aiohttp_client(create_app(settings), headers=AUTH_HEADERS)
    await checker.config_set("maxmemory", 1)  # every write is refused: out of memory

    answers = await _burst(client)
    assert [status for status, _ in answers] == [503] * BURST
    assert {body["error"] for _, body in answers} == {
        "the job queue is unavailable, try again shortly"
    }
    await checker.config_set("maxmemory", 0)
    assert await checker.zcard(settings.queue_name) == 0
    assert await checker.keys("arq:job:*") == []

    assert {status for status, _ in await _burst(client)} == {202}  # and it recovers
    assert await checker.zcard(settings.queue_name) == BURST


async def test_redis_gone_mid_burst_answers_503_with_retry_after_to_every_request(
    aiohttp_client: ClientFactory,
    own_redis: tuple[Settings, ArqRedis, subprocess.Popen[bytes]],
) -> None:
    settings, _, process = own_redis
    client = await aiohttp_client(create_app(settings), headers=AUTH_HEADERS)
    assert {status for status, _ in await _burst(client, 5)} == {202}  # connected, script loaded
    process.kill()
    await asyncio.to_thread(process.wait)

    responses = await asyncio.gather(
        *(
            client.post("/send-email", json={"to": "a@example.com", "subject": "s", "body": "b"})
            for _ in range(BURST)
        )
    )
    assert [response.status for response in responses] == [503] * BURST
    assert {response.headers["Retry-After"] for response in responses} == {"5"}


async def test_each_call_in_a_batch_gets_its_own_reply(redis: ArqRedis, settings: Settings) -> None:
    await redis.set("arq:job:taken", b"{}")  # an id that exists already: refused, alone
    calls = [
        enqueue_job(redis, "log_event", job_id, {"event": {"id": job_id}})
        for job_id in ("first", "taken", "last")
    ]
    assert await asyncio.gather(*calls) == [True, False, True]
    assert sorted(await redis.zrange(settings.queue_name, 0, -1)) == [b"first", b"last"]


async def test_a_call_given_up_before_its_batch_left_is_not_sent(
    redis: ArqRedis, settings: Settings
) -> None:
    kept = asyncio.create_task(enqueue(redis, "log_event", {"event": {"n": 1}}))
    dropped = asyncio.create_task(enqueue(redis, "log_event", {"event": {"n": 2}}))
    await asyncio.sleep(0)  # both are now waiting for the batch, which has not left yet
    dropped.cancel()

    task_id = await kept
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert await redis.zrange(settings.queue_name, 0, -1) == [task_id.encode()]
