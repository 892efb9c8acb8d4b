"""Many concurrent calls of one Lua script, sent to Redis together: one round trip for all.

Every enqueue is one EVALSHA. Under load many requests are waiting on Redis at once, and a
round trip (waking another process) costs far more than the command, so this is group
commit: calls made while a batch is on its way wait and go out together, in one pipeline,
as soon as it is back. One batch is in flight at a time. A lone call goes out at the next
turn of the event loop, so a quiet service waits no longer than before.

Each caller gets its own command's reply, and only once that reply arrived: a job reported
queued is in Redis. When the whole pipeline fails (Redis unreachable), every caller in it
gets the error; a call made by a caller that gave up before its batch left is not sent.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError


@dataclass(slots=True)
class _Call:
    keys: Sequence[str]
    args: Sequence[Any]
    reply: asyncio.Future[Any]


def _own_copy(exc: BaseException) -> BaseException:
    """A copy of ``exc`` per caller, so the callers' tracebacks do not pile up on one object."""
    try:
        return copy.copy(exc)
    except Exception:  # an exception type that cannot be copied: share it
        return exc


class ScriptBatcher:
    """Runs one Lua script on one client for all its callers, batching concurrent calls.

    It keeps no reference to the client while idle, so it can live in a weak mapping keyed
    by the client (service.queue).
    """

    def __init__(self, script: str) -> None:
        self._script = script
        self._sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
        self._waiting: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None

    async def run(self, redis: Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The script's reply for these keys and arguments, or the error Redis gave."""
        loop = asyncio.get_running_loop()
        call = _Call(keys, args, loop.create_future())
        self._waiting.append(call)
        if self._sender is None:
            # an empty context: the sender serves many requests, so it carries none's log fields
            self._sender = loop.create_task(self._send_all(redis), context=contextvars.Context())
        return await call.reply

    async def _send_all(self, redis: Redis) -> None:
        try:
            while self._waiting:
                batch = [call for call in self._waiting if not call.reply.done()]
                self._waiting = []
                if batch:
                    await self._send(redis, batch)
        finally:
            self._sender = None
            for call in self._waiting:  # only when this task itself was cancelled
                call.reply.cancel()
            self._waiting = []

    async def _send(self, redis: Redis, batch: list[_Call]) -> None:
        try:
            replies = await self._pipeline(redis, batch)
            unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if unknown:
                # first use on this Redis, or it restarted: those calls did not run; load the
                # script once and send them again
                await redis.script_load(self._script)
                again = await self._pipeline(redis, [batch[i] for i in unknown])
                for i, reply in zip(unknown, again, strict=True):
                    replies[i] = reply
        except Exception as exc:
            for call in batch:
                if not call.reply.done():
                    call.reply.set_exception(_own_copy(exc))
            return
        except BaseException:  # cancelled (the loop is closing): so are the calls
            for call in batch:
                call.reply.cancel()
            raise
        for call, reply in zip(batch, replies, strict=True):
            if call.reply.done():  # its caller gave up meanwhile
                continue
            if isinstance(reply, Exception):
                call.reply.set_exception(reply)
            else:
                call.reply.set_result(reply)

    async def _pipeline(self, redis: Redis, batch: list[_Call]) -> list[Any]:
        async with redis.pipeline(transaction=False) as pipe:
            for call in batch:
                pipe.evalsha(self._sha, len(call.keys), *call.keys, *call.args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies
