"""Consecutive calls of one script in an auto-pipelined batch go as one call
(service.store.script_merge), and each caller still gets what a call of its own would give."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from redis.exceptions import ResponseError

from service.store import script_merge
from service.store.autopipeline import AutoPipelineRedis
from service.store.scripts import LuaScript
from tests.conftest import TEST_REDIS_URL

# appends ARGV[1] to the list KEYS[1]; replies with the list's length, or as ARGV[2] asks
_APPEND = LuaScript("""
local length = redis.call('RPUSH', KEYS[1], ARGV[1])
if ARGV[2] == 'nil' then return nil end
if ARGV[2] == 'fail' then error('asked to fail') end
if ARGV[2] == 'wrongtype' then return redis.call('INCR', KEYS[1]) end
if ARGV[2] == 'list' then return {length, 'two', {3}} end
return length
""")


@pytest.fixture
async def client(redis: ArqRedis) -> AsyncIterator[AutoPipelineRedis]:
    auto = AutoPipelineRedis.from_url(TEST_REDIS_URL)
    await auto.ping()
    yield auto
    await auto.aclose(close_connection_pool=True)


@pytest.fixture
def merged_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every merged call sent."""
    sizes: list[int] = []
    original = script_merge.merge

    def merge(stack: script_merge.CommandStack) -> tuple[script_merge.CommandStack, list[int]]:
        sent, counts = original(stack)
        sizes.extend(count for count in counts if count > 1)
        return sent, counts

    monkeypatch.setattr(script_merge, "merge", merge)
    return sizes


async def test_a_run_of_calls_goes_as_one_and_each_gets_its_own_reply(
    client: AutoPipelineRedis, redis: ArqRedis, merged_runs: list[int]
) -> None:
    asks = ["", "nil", "list", "fail", "", "wrongtype", ""]
    calls = [_APPEND.run(client, [f"list:{n}"], [f"item {n}", ask]) for n, ask in enumerate(asks)]
    replies: list[Any] = await asyncio.gather(*calls, return_exceptions=True)
    assert merged_runs == [len(asks)]  # one call carried them all
    assert replies[0] == 1
    assert replies[1] is None
    assert replies[2] == [1, b"two", [3]]
    assert isinstance(replies[3], ResponseError)
    assert "asked to fail" in str(replies[3])
    assert replies[4] == 1  # the calls after a failed one still ran
    assert isinstance(replies[5], ResponseError)
    assert "WRONGTYPE" in str(replies[5])
    assert replies[6] == 1
    for n in range(len(asks)):  # every call's own write, a failed call's included
        assert await redis.lrange(f"list:{n}", 0, -1) == [f"item {n}".encode()]  # type: ignore[misc]


async def test_only_neighbours_merge_so_nothing_runs_out_of_order(
    client: AutoPipelineRedis, redis: ArqRedis, merged_runs: list[int]
) -> None:
    await redis.script_load(_APPEND.source)  # else a lone EVALSHA's NOSCRIPT retry runs later

    async def script(n: int) -> Any:
        return await _APPEND.run(client, ["shared"], [f"script {n}", ""])

    async def command(n: int) -> Any:
        return await client.rpush("shared", f"command {n}")  # type: ignore[misc]

    await asyncio.gather(script(0), script(1), command(2), script(3), command(4), script(5))
    order = [raw.decode() for raw in await redis.lrange("shared", 0, -1)]  # type: ignore[misc]
    assert order == ["script 0", "script 1", "command 2", "script 3", "command 4", "script 5"]
    assert merged_runs == [2]  # 0 and 1; 3 and 5 are not neighbours


async def test_a_redis_that_forgot_the_script_runs_a_merged_call_anyway(
    client: AutoPipelineRedis, redis: ArqRedis, merged_runs: list[int]
) -> None:
    await redis.script_flush()
    replies = await asyncio.gather(*(_APPEND.run(client, ["forgot"], [n, ""]) for n in range(5)))
    assert replies == [1, 2, 3, 4, 5]
    assert merged_runs == [5]


async def test_submitted_starts_merge_too(
    client: AutoPipelineRedis, redis: ArqRedis, merged_runs: list[int]
) -> None:
    replies = [_APPEND.submit(client, [f"sub:{n}"], ["x", ""]) for n in range(3)]
    assert await asyncio.gather(*replies) == [1, 1, 1]
    assert merged_runs == [3]
