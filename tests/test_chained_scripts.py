"""Two script calls sent as one (service.store.scripts.chained_call): each part sees only its
own KEYS and ARGV, they run in order, and the call replies as the second part."""

from __future__ import annotations

from arq.connections import ArqRedis

from service.store.autopipeline import AutoPipelineRedis
from service.store.scripts import LuaScript, ScriptCall, chained_call
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
