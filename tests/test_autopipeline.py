"""Auto-pipelining (service.store.autopipeline): shared round trips, separate replies and errors."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from service.store.autopipeline import AutoPipelineRedis
from service.store.redis import pack_with_hiredis
from service.store.scripts import LuaScript
from tests.conftest import TEST_REDIS_URL, free_port
from tests.waiting import wait_until

# the name of the fixture's connections in CLIENT LIST; the test process's own
CLIENT_NAME = f"test-autopipeline-{os.getpid()}"


@pytest.fixture
async def client(redis: ArqRedis) -> AsyncIterator[AutoPipelineRedis]:
    auto = AutoPipelineRedis.from_url(TEST_REDIS_URL, client_name=CLIENT_NAME)
    yield auto
    await auto.aclose(close_connection_pool=True)


def count_pipelines(client: AutoPipelineRedis, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that gets an item for each write ``client``'s connections make from now on (a
    batch is one write)."""
    sent: list[int] = []
    original = AbstractConnection.send_packed_command

    async def counting_send(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        if self.client_name == CLIENT_NAME:
            sent.append(1)
        await original(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting_send)
    return sent


async def test_concurrent_commands_get_their_own_replies(client: AutoPipelineRedis) -> None:
    replies = await asyncio.gather(*(client.incr("counter") for _ in range(200)))
    assert sorted(replies) == list(range(1, 201))
    assert await client.get("counter") == b"200"


async def test_commands_from_one_tick_leave_in_one_pipeline(
    client: AutoPipelineRedis, redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    await client.ping()  # connect first
    sent = count_pipelines(client, monkeypatch)
    await asyncio.gather(*(client.set(f"key:{n}", n) for n in range(100)))
    assert len(sent) == 1  # one pipeline carried all 100 commands
    assert await redis.get("key:99") == b"99"


async def test_an_error_belongs_to_its_own_command_only(client: AutoPipelineRedis) -> None:
    await client.set("text", "not a number")

    async def bad() -> None:
        await client.incr("text")

    good, failed = await asyncio.gather(client.incr("n"), bad(), return_exceptions=True)
    assert good == 1
    assert isinstance(failed, ResponseError)


async def test_a_pipeline_keeps_its_replies_in_order_and_raises_its_first_error(
    client: AutoPipelineRedis,
) -> None:
    await client.set("text", "x")

    async def mine() -> list[object]:
        async with client.pipeline(transaction=False) as pipe:
            pipe.set("a", 1)
            pipe.get("a")
            pipe.incr("a")
            return await pipe.execute()

    async def failing() -> list[object]:
        async with client.pipeline(transaction=False) as pipe:
            pipe.incr("b")
            pipe.incr("text")
            return await pipe.execute()

    ok, failed = await asyncio.gather(mine(), failing(), return_exceptions=True)
    assert ok == [True, b"1", 2]
    assert isinstance(failed, ResponseError)
    assert "Command # 2 (INCRBY text 1)" in str(failed)  # numbered within its own pipeline
    assert await client.get("b") == b"1"  # the pipeline's other command still ran


async def test_transactions_and_blocking_commands_go_on_their_own(
    client: AutoPipelineRedis, redis: ArqRedis
) -> None:
    async def wait() -> object:
        return await client.blpop(["nothing"], timeout=10)  # type: ignore[misc]

    async def blocked_in_redis() -> bool:
        connections = await redis.client_list()
        return any(
            connection["name"] == CLIENT_NAME and connection["cmd"] == "blpop"
            for connection in connections
            if "b" in connection["flags"]  # blocked: the BLPOP is waiting in the server
        )

    waiting = asyncio.create_task(wait())
    await wait_until(blocked_in_redis, within=5, interval=0.005)
    assert await asyncio.wait_for(client.set("quick", 1), 0.5)  # not stuck behind the BLPOP
    async with client.pipeline(transaction=True) as pipe:
        pipe.incr("t")
        pipe.incr("t")
        assert await pipe.execute() == [1, 2]
    await redis.rpush("nothing", "item")  # type: ignore[misc]
    assert await waiting == (b"nothing", b"item")  # the BLPOP was still waiting, on its own


async def test_a_cancelled_caller_does_not_disturb_the_others(client: AutoPipelineRedis) -> None:
    async def incr() -> int:
        return int(await client.incr("d"))

    async def set_c() -> None:
        await client.set("c", 1)

    cancelled = asyncio.create_task(set_c())
    others = [asyncio.create_task(incr()) for _ in range(10)]
    await asyncio.sleep(0)
    cancelled.cancel()  # before its batch left: as without batching, it is not sent
    assert sorted(await asyncio.gather(*others)) == list(range(1, 11))
    assert await client.get("c") is None


async def test_a_lost_connection_fails_every_command_in_the_batch() -> None:
    nowhere = AutoPipelineRedis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    try:
        results = await asyncio.gather(nowhere.get("a"), nowhere.get("b"), return_exceptions=True)
    finally:
        await nowhere.aclose(close_connection_pool=True)
    assert all(isinstance(result, RedisConnectionError) for result in results)


async def test_hiredis_packing_sends_what_redis_py_sends(client: AutoPipelineRedis) -> None:
    pack_with_hiredis(client)
    await client.zadd("scores", {"a": 1.5, "b": 2})
    await client.execute_command("CONFIG GET", "maxmemory")  # a two-word command
    await client.set("unicode", "café ✓")
    assert await client.zrange("scores", 0, -1, withscores=True) == [(b"a", 1.5), (b"b", 2.0)]
    assert (await client.get("unicode")).decode() == "café ✓"


_SET_AND_COUNT = LuaScript("redis.call('SET', KEYS[1], ARGV[1]) return redis.call('INCR', KEYS[2])")


async def test_a_submitted_script_runs_before_what_is_sent_after_it(
    client: AutoPipelineRedis, redis: ArqRedis
) -> None:
    """LuaScript.submit: the call leaves at once and runs before what the caller sends next,
    even in a Redis that has forgotten every script (SCRIPT FLUSH, a restart, a failover):
    an attempt's start must not land after the job's own first writes."""
    for value in ("known", "forgotten"):
        if value == "known":
            await redis.script_load(_SET_AND_COUNT.source)
        else:
            await redis.script_flush()
        reply = _SET_AND_COUNT.submit(client, ["submitted", "count"], [value])
        assert await client.get("submitted") == value.encode()  # sent after: sees its write
        assert await reply == (1 if value == "known" else 2)
    await redis.lpush("a-list", "x")  # type: ignore[misc]
    failing = _SET_AND_COUNT.submit(client, ["submitted", "a-list"], ["x"])
    with pytest.raises(ResponseError, match="WRONGTYPE"):  # the script's own error, as raised
        await failing


async def test_script_calls_share_a_batch_and_load_a_forgotten_script(
    client: AutoPipelineRedis, redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LuaScript.run goes straight into the batch: concurrent calls share one pipeline, a
    Redis that forgot the script gets it loaded once, and a script's error is raised."""
    await client.ping()
    await redis.script_flush()
    sent = count_pipelines(client, monkeypatch)
    calls = (_SET_AND_COUNT.run(client, [f"run:{n}", "runs"], [n]) for n in range(50))
    replies = await asyncio.gather(*calls)
    assert sorted(replies) == list(range(1, 51))  # every call ran once, none lost to NOSCRIPT
    assert await redis.get("run:49") == b"49"
    sent.clear()
    replies = await asyncio.gather(
        *(_SET_AND_COUNT.run(client, [f"run:{n}", "runs"], [n]) for n in range(50))
    )
    assert sorted(replies) == list(range(51, 101))
    assert len(sent) == 1  # known now: one pipeline carried all 50 calls
    await redis.lpush("a-list", "x")  # type: ignore[misc]
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await _SET_AND_COUNT.run(client, ["run:0", "a-list"], ["x"])
