"""Two script calls sent as one (service.store.scripts.chained_call): each part sees only its
own KEYS and ARGV, they run in order, and the call replies as the second part; a gate and the
call it guards (gated_call): the second runs only when the gate lets it."""

from __future__ import annotations

from arq.connections import ArqRedis

from service.store.autopipeline import AutoPipelineRedis
from service.store.scripts import LuaScript, ScriptCall, chained_call, gated_call
from tests.conftest import TEST_REDIS_URL

# appends what it was given to a list, then says how many keys and arguments it saw
_RECORD = LuaScript("""
redis.call('RPUSH', KEYS[1], table.concat(ARGV, ','))
return {#KEYS, #ARGV, unpack(ARGV)}
""")
_READ_BACK = LuaScript("return redis.call('LRANGE', KEYS[1], 0, -1)")


async def test_each_part_sees_its_own_keys_and_arguments(redis: ArqRedis) -> None:
    client = AutoPipelineRedis.from_url(TEST_REDIS_URL)
    try:
        for first_args, second_args in ((["a", "2"], ["x"]), ([], ["y", "", "3"]), (["b"], [])):
            await redis.delete("log:1", "log:2")
            first = ScriptCall(_RECORD, ["log:1"], list(first_args))
            second = ScriptCall(_RECORD, ["log:2", "unused"], list(second_args))
            call = chained_call(first, second)
            reply = await call.script.run(client, call.keys, call.args)
            assert reply == [2, len(second_args), *(arg.encode() for arg in second_args)]
            assert await redis.lrange("log:1", 0, -1) == [",".join(first_args).encode()]  # type: ignore[misc]
            assert await redis.lrange("log:2", 0, -1) == [",".join(second_args).encode()]  # type: ignore[misc]
        # the second part runs after the first: it reads what the first wrote
        await redis.delete("log:1")
        call = chained_call(
            ScriptCall(_RECORD, ["log:1"], ["written first"]), ScriptCall(_READ_BACK, ["log:1"], [])
        )
        assert await call.script.run(client, call.keys, call.args) == [b"written first"]
    finally:
        await client.aclose(close_connection_pool=True)


# lets the call through when ARGV[1] is 'open', and says what it saw
_GATE = LuaScript("""
if ARGV[1] == 'open' then return {1, KEYS[1]} end
return {0, KEYS[1], 'closed'}
""")


async def test_a_gated_call_runs_its_second_part_only_when_the_gate_opens(
    redis: ArqRedis,
) -> None:
    client = AutoPipelineRedis.from_url(TEST_REDIS_URL)
    try:
        await redis.delete("log:1")
        write = ScriptCall(_RECORD, ["log:1"], ["written", "2"])
        opened = gated_call(ScriptCall(_GATE, ["gate:key"], ["open"]), write)
        reply = await opened.run(client)
        assert reply == [1, [1, 2, b"written", b"2"]]
        assert await redis.lrange("log:1", 0, -1) == [b"written,2"]  # type: ignore[misc]

        closed = gated_call(ScriptCall(_GATE, ["gate:key"], ["shut"]), write)
        assert await closed.run(client) == [0, [0, b"gate:key", b"closed"]]
        assert await redis.lrange("log:1", 0, -1) == [b"written,2"]  # type: ignore[misc]
    finally:
        await client.aclose(close_connection_pool=True)
