"""Two batches in flight on one connection (service.store.batcher): the second leaves before the
first one's replies are back, every call still runs in the order it was made, and a connection
lost under both sends both again on a new one, in order (or fails them, without retries).

A relay (tests.faults.redis_relay) between the client and the test Redis holds the first batch
on the wire, so "in flight" is a fact the test sees, not a timing it hopes for."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from arq.connections import ArqRedis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from service.store.autopipeline import AutoPipelineRedis
from tests.conftest import TEST_REDIS_URL
from tests.faults.redis_relay import HoldingRelay
from tests.waiting import wait_until

_TEST_REDIS = urlsplit(TEST_REDIS_URL)
_HOLD = b"held-first"


@pytest.fixture
async def relay(redis: ArqRedis) -> AsyncIterator[HoldingRelay]:
    assert _TEST_REDIS.port is not None
    async with HoldingRelay(_TEST_REDIS.port, hold=_HOLD) as relay:
        yield relay


async def _push(client: AutoPipelineRedis, value: bytes) -> int:
    return int(await client.rpush("order", value))  # type: ignore[misc]


def _client(relay: HoldingRelay, retries: int) -> AutoPipelineRedis:
    """A client through the relay, retrying a lost connection ``retries`` times."""
    client: AutoPipelineRedis = AutoPipelineRedis.from_url(
        relay.url(int(_TEST_REDIS.path.strip("/") or 0)),
        retry=Retry(NoBackoff(), retries),
        retry_on_error=[RedisConnectionError],
    )
    return client


async def _arrives(relay: HoldingRelay, data: bytes) -> None:
    """Wait until ``data`` has reached the relay (sent by the client, held or not)."""

    async def arrived() -> bool:
        return data in relay.received

    await wait_until(arrived, within=5, interval=0.005)


@contextlib.asynccontextmanager
async def _two_in_flight(
    relay: HoldingRelay, retries: int
) -> AsyncIterator[tuple[AutoPipelineRedis, asyncio.Task[int], asyncio.Task[int]]]:
    """A client through the relay with two batches in flight: the first held on the wire, the
    second sent behind it while the first has no reply yet."""
    client = _client(relay, retries)
    try:
        await client.ping()
        first = asyncio.create_task(_push(client, _HOLD))
        await asyncio.wait_for(relay.held.wait(), 5)
        second = asyncio.create_task(_push(client, b"second"))
        await _arrives(relay, b"second")
        assert not first.done()
        yield client, first, second
    finally:
        await client.aclose(close_connection_pool=True)


async def test_a_second_batch_leaves_while_the_first_is_in_flight(
    relay: HoldingRelay, redis: ArqRedis
) -> None:
    async with _two_in_flight(relay, retries=0) as (client, first, second):
        third = asyncio.create_task(_push(client, b"third"))
        await asyncio.sleep(0.05)  # two batches in flight: the third waits for room
        assert b"third" not in relay.received
        relay.release()
        assert list(await asyncio.wait_for(asyncio.gather(first, second, third), 5)) == [1, 2, 3]
        assert await redis.lrange("order", 0, -1) == [_HOLD, b"second", b"third"]  # type: ignore[misc]


async def test_a_lost_connection_sends_the_batches_in_flight_again_in_order(
    relay: HoldingRelay, redis: ArqRedis
) -> None:
    async with _two_in_flight(relay, retries=3) as (client, first, second):
        relay.cut()  # the held bytes die with the connection
        relay.release()  # new connections pass
        assert list(await asyncio.wait_for(asyncio.gather(first, second), 5)) == [1, 2]
        assert await redis.lrange("order", 0, -1) == [_HOLD, b"second"]  # type: ignore[misc]
        assert await client.incr("after") == 1  # the client goes on


async def test_without_retries_a_lost_connection_fails_each_call_in_flight(
    relay: HoldingRelay, redis: ArqRedis
) -> None:
    async with _two_in_flight(relay, retries=0) as (client, first, second):
        relay.cut()
        relay.release()
        results = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 5)
        assert all(isinstance(result, RedisConnectionError) for result in results), results
        assert await redis.exists("order") == 0  # the held batch never reached Redis
        assert await client.incr("after") == 1  # a new connection for the next call
