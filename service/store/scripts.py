"""Running our Lua scripts by hash, loading each once into a Redis that does not know it.

Every script of the service (enqueue, claim, tracking, cancel, failed jobs, idempotency keys)
is sent as EVALSHA: the source goes over the wire only after Redis answers NOSCRIPT (first
use, or it restarted), and its hash is computed once, not per call. Through an
auto-pipelined client (service.store.autopipeline) concurrent calls share a round trip. A
call sent ahead of its caller's work (:meth:`LuaScript.submit`, an attempt's start) carries
its source instead, so that it never has to be sent again behind that work. Two calls that
always go together can go as one (:class:`ScriptCall`, :func:`chained`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from service.store import script_merge
from service.store.autopipeline import AutoPipelineRedis


class LuaScript:
    """One script's source and hash."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        script_merge.register(self.sha, source)  # a batch may send a run of calls as one

    async def run(self, redis: Redis, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The script's reply; loads it first if Redis has forgotten it."""
        try:
            return await self._evalsha(redis, keys, args)
        except NoScriptError:
            await redis.script_load(self.source)
            return await self._evalsha(redis, keys, args)

    async def _evalsha(self, redis: Redis, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        if isinstance(redis, AutoPipelineRedis):  # straight into the batch
            return await redis.run_batched("EVALSHA", self.sha, len(keys), *keys, *args)
        return await redis.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[misc]

    def submit(self, redis: Redis, keys: Sequence[Any], args: Sequence[Any]) -> Awaitable[Any]:
        """Send the call now and give its reply later: through an auto-pipelined client the
        call joins the next batch at once, so the caller's own work overlaps its round trip
        and the call still runs before anything the caller sends afterwards. It goes as EVAL,
        with its source: a Redis that has forgotten the script (a restart, a failover) could
        otherwise answer NOSCRIPT, and the call sent again would run after the caller's later
        writes. The result must be awaited."""
        if isinstance(redis, AutoPipelineRedis):
            sent = redis.submit_command("EVAL", self.source, len(keys), *keys, *args)
            if sent is not None:
                reply: asyncio.Future[Any] = sent.get_loop().create_future()
                sent.add_done_callback(lambda done: _answer(done, reply))
                return reply
        return asyncio.ensure_future(self.run(redis, keys, args))

    async def run_confirmed(self, redis: Redis, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The script's reply, once the replicas ``redis`` asks for hold its writes
        (REDIS_MIN_REPLICAS_ACK: WAIT, sent after it on the same connection, in the same round
        trip); :class:`ReplicasBehindError` when they do not confirm in time. A client that
        asks for no replica (the worker's, or the setting at 0) runs it as :meth:`run` does.
        """
        if not isinstance(redis, AutoPipelineRedis) or redis.replica_ack is None:
            return await self.run(redis, keys, args)
        try:
            return await self._run_confirmed(redis, keys, args)
        except NoScriptError:
            await redis.script_load(self.source)
            return await self._run_confirmed(redis, keys, args)

    async def _run_confirmed(
        self, redis: AutoPipelineRedis, keys: Sequence[Any], args: Sequence[Any]
    ) -> Any:
        pipe = redis.confirmed_pipeline()
        pipe.evalsha(self.sha, len(keys), *keys, *args)
        (reply,) = await pipe.execute()
        return reply


def _answer(sent: asyncio.Future[list[Any]], reply: asyncio.Future[Any]) -> None:
    """A submitted call's outcome onto ``reply``, unless its caller has given up on it."""
    if reply.done():
        return
    if sent.cancelled():
        reply.cancel()
    elif (error := sent.exception()) is not None:
        reply.set_exception(error)
    else:
        (answer,) = sent.result()
        if isinstance(answer, ResponseError):  # the script's own error
            reply.set_exception(answer)
        else:
            reply.set_result(answer)


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """A script call not sent yet: what a caller hands to whoever sends the next one, so the
    two go as one call (:func:`chained`)."""

    script: LuaScript
    keys: list[Any]
    args: list[Any]

    async def run(self, redis: Redis) -> Any:
        """Send it on its own: the script's reply."""
        return await self.script.run(redis, self.keys, self.args)


# Two scripts in one, each with its own KEYS and ARGV: the call's ARGV starts with how many of
# its KEYS and ARGV are ``first``'s. What the two are made to do follows (_CHAIN, _GATE).
_TWO_SCRIPTS = """local nkeys, nargs = tonumber(ARGV[1]), tonumber(ARGV[2])
local function part(from, to, list)
  local out = {}
  for i = from, to do out[#out + 1] = list[i] end
  return out
end
local function first(KEYS, ARGV)
%s
end
local function second(KEYS, ARGV)
%s
end
local function run_first() return first(part(1, nkeys, KEYS), part(3, nargs + 2, ARGV)) end
local function run_second()
  return second(part(nkeys + 1, #KEYS, KEYS), part(nargs + 3, #ARGV, ARGV))
end
"""
# ``first`` then ``second``; ``second``'s reply is the call's.
_CHAIN = _TWO_SCRIPTS + "run_first()\nreturn run_second()\n"
# ``first`` (the gate), then ``second`` only if the gate's reply starts with 1: {1, second's
# reply}, else {0, the gate's reply}.
_GATE = (
    _TWO_SCRIPTS
    + """local opened = run_first()
if opened[1] ~= 1 then return {0, opened} end
return {1, run_second()}
"""
)


@functools.cache
def chained(first: LuaScript, second: LuaScript) -> LuaScript:
    """One script doing ``first`` then ``second`` (see :func:`chained_call`): each call the
    worker sends costs it about as much CPU as a small script's whole work in Redis."""
    return LuaScript(_CHAIN % (first.source, second.source))


def chained_call(first: ScriptCall, second: ScriptCall) -> ScriptCall:
    """``first`` and ``second`` as one call to :func:`chained`, replying as ``second``."""
    return _two(chained(first.script, second.script), first, second)


@functools.cache
def gated(gate: LuaScript, second: LuaScript) -> LuaScript:
    """One script doing ``gate``, then ``second`` only if the gate lets it (see
    :func:`gated_call`): a check and the write it guards in one round trip, and nothing
    between them."""
    return LuaScript(_GATE % (gate.source, second.source))


def gated_call(gate: ScriptCall, second: ScriptCall) -> ScriptCall:
    """``gate`` and ``second`` as one call to :func:`gated`. ``gate`` replies with a list
    whose first element is 1 to let ``second`` run; the call replies ``[1, second's reply]``,
    or ``[0, gate's reply]`` when the gate said no and ``second`` did not run."""
    return _two(gated(gate.script, second.script), gate, second)


def _two(script: LuaScript, first: ScriptCall, second: ScriptCall) -> ScriptCall:
    counts: list[Any] = [len(first.keys), len(first.args)]
    return ScriptCall(script, first.keys + second.keys, counts + first.args + second.args)
