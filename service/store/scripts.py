"""Running our Lua scripts by hash, loading each once into a Redis that does not know it.

Every script of the service (enqueue, claim, tracking, cancel, failed jobs, idempotency keys)
is sent as EVALSHA: the source goes over the wire only after Redis answers NOSCRIPT (first
use, or it restarted), and its hash is computed once, not per call. Through an
auto-pipelined client (service.store.autopipeline) concurrent calls share a round trip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from service.store.autopipeline import AutoPipelineRedis


class LuaScript:
    """One script's source and hash."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def run(self, redis: Redis, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The script's reply; loads it first if Redis has forgotten it."""
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[misc]
        except NoScriptError:
            await redis.script_load(self.source)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[misc]

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
