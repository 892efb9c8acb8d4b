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
