"""The process's shared pub/sub connection (service/store/subscriptions.py), against a private
redis-server: one SUBSCRIBE per channel whatever its listeners, bounded queues, and a
subscription that comes back after its connection is killed."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from service.store.subscriptions import SharedSubscriptions
from tests.waiting import wait_until


@pytest.fixture
async def redis(private_redis: tuple[str, subprocess.Popen[bytes]]) -> AsyncIterator[Redis]:
    client = Redis.from_url(private_redis[0], socket_timeout=2)

    async def answers() -> bool:
        try:
            return bool(await client.ping())
        except (RedisError, OSError):
            return False

    await wait_until(answers, within=10)
    yield client
    await client.aclose()


@pytest.fixture
async def hub(redis: Redis) -> AsyncIterator[SharedSubscriptions]:
    shared = SharedSubscriptions(redis)
    yield shared
    await shared.close()


async def _subscribers(redis: Redis, channel: str) -> int:
    [(_, count)] = await redis.pubsub_numsub(channel)
    return int(count)


async def test_listeners_of_one_channel_share_one_confirmed_subscription(
    redis: Redis, hub: SharedSubscriptions
) -> None:
    async with (
        hub.listen("news", capacity=8, confirm_within=5) as first,
        hub.listen("news", capacity=8, confirm_within=5) as second,
    ):
        # confirmed before handed over: a message published now reaches both
        assert await redis.publish("news", "hello") == 1  # one subscriber: the process
        assert await first.get(5) == b"hello"
        assert await second.get(5) == b"hello"
        assert await _subscribers(redis, "news") == 1
    await wait_until(lambda: _unsubscribed(redis, "news"), within=5)
    assert hub.listeners() == 0


async def _unsubscribed(redis: Redis, channel: str) -> bool:
    return await _subscribers(redis, channel) == 0


async def test_a_listener_that_falls_behind_is_marked_and_its_queue_stays_bounded(
    redis: Redis, hub: SharedSubscriptions
) -> None:
    async with (
        hub.listen("busy", capacity=3, confirm_within=5) as slow,
        hub.listen("busy:done", capacity=3, confirm_within=5) as marker,
    ):
        for n in range(10):
            await redis.publish("busy", str(n))
        await redis.publish("busy:done", "")  # sent after the ten: read after them too
        assert await marker.get(5) == b""
        assert slow.overflowed
        assert [await slow.get(0) for _ in range(4)] == [b"0", b"1", b"2", None]


async def test_patterns_fan_out_like_channels(redis: Redis, hub: SharedSubscriptions) -> None:
    async with hub.listen("job:*", capacity=8, pattern=True, confirm_within=5) as listener:
        await redis.publish("job:1", "one")
        await redis.publish("other", "not for it")
        await redis.publish("job:2", "two")
        assert [await listener.get(5), await listener.get(5)] == [b"one", b"two"]
        assert int(await redis.pubsub_numpat()) == 1


async def test_a_killed_connection_is_replaced_and_its_listeners_told_they_missed_some(
    redis: Redis, hub: SharedSubscriptions
) -> None:
    async with hub.listen("news", capacity=8, confirm_within=5) as listener:
        killed = await redis.client_kill_filter(_type="pubsub")
        assert int(killed) == 1
        await redis.publish("news", "lost")  # no subscriber while it reconnects, or one

        async def told() -> bool:
            return listener.missed

        await wait_until(told, within=10)
        listener.clear()
        assert await _subscribers(redis, "news") == 1
        await redis.publish("news", "after")
        assert await listener.get(5) == b"after"


async def test_listening_while_redis_is_away_fails_fast_when_asked_to_confirm() -> None:
    away = Redis(port=1, socket_connect_timeout=0.5)  # nothing listens on port 1
    hub = SharedSubscriptions(away)
    try:
        with pytest.raises(RedisConnectionError):
            async with hub.listen("news", capacity=1, confirm_within=1):
                pass
        assert hub.listeners() == 0
    finally:
        await hub.close()
        await away.aclose()
