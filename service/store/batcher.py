"""The batches of an auto-pipelined client (service.store.autopipeline), two in flight at once on
one connection.

Calls made in one loop tick leave together as one batch; calls made while a batch is in flight
form the next one (group commit). With one batch in flight at a time, the worker sat idle for
the whole round trip of each: under load about 30% of a no-op drain went to waiting, none of it
to work. Here a second batch goes out as soon as it is ready, on the same connection, while the
first one's replies are still on their way. Redis runs the commands of one connection in the
order they arrive, so every call still runs after everything sent before it, as it did with
one batch at a time (:meth:`service.store.scripts.LuaScript.submit` relies on it). Two tasks
share the connection: a sender that writes each batch, and a reader that reads the replies of
the batches in flight, oldest first, and hands them to their callers.

A batch's connection is checked out of the pool while batches are waiting or in flight, not once
per batch, and given back once the client is idle. When the connection fails, every batch in
flight is sent again, in order, on a new one, under the client's retry policy (as redis-py
retries a pipeline); when the policy gives up, each of their calls gets the error.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import copy
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError

from service.store import script_merge

CommandStack = script_merge.CommandStack
Call = tuple[CommandStack, "asyncio.Future[list[Any]]"]

# batches in flight on one connection: the second overlaps the first one's round trip; more
# would only make each batch smaller (measured in bench/micro.py: see the README, Performance)
DEPTH = 2


def _own_copy(exc: BaseException) -> BaseException:
    try:
        return copy.copy(exc)
    except Exception:  # an exception that cannot be copied: shared, then
        return exc


async def _disconnect(connection: Connection) -> None:
    """Close ``connection`` so that the pool hands it out again only newly connected."""
    with contextlib.suppress(Exception):  # closing a broken one may fail too: it is dropped
        await connection.disconnect(nowait=True)


@dataclass(slots=True)
class _Batch:
    """One batch sent: its calls, what went on the wire, and whether the write is done."""

    calls: list[Call]
    stack: CommandStack  # what is sent: runs of one script merged, WAIT last when confirming
    sizes: list[int]  # per command sent, how many of the calls' commands it stands for
    written: asyncio.Future[None] = field(init=False)

    def __post_init__(self) -> None:
        self.written = asyncio.get_running_loop().create_future()

    def _settle(self) -> None:
        """Mark a failed write's error as seen: a batch answered after a resend, or failed,
        may never have had it read, and asyncio would log it as never retrieved."""
        if self.written.done() and not self.written.cancelled():
            self.written.exception()

    def answer(self, replies: list[Any], confirmed: bool) -> None:
        """Each call's replies (its errors as values), the WAIT's reply last if ``confirmed``."""
        self._settle()
        replies = script_merge.split(replies, self.sizes)
        start = 0
        for commands, future in self.calls:
            end = start + len(commands)
            if not future.done():  # its caller may have been cancelled meanwhile
                future.set_result(replies[start:end] + ([replies[-1]] if confirmed else []))
            start = end

    def fail(self, exc: BaseException) -> None:
        self._settle()
        for _, future in self.calls:
            if not future.done():  # a copy each: callers' tracebacks must not pile up
                future.set_exception(_own_copy(exc))


class Batcher:
    """Collects command stacks and sends them as non-transactional pipelines, at most
    :data:`DEPTH` of them in flight at once (see the module docstring)."""

    def __init__(self, redis: Redis, confirm: tuple[Any, ...] | None = None) -> None:
        self._redis = redis
        self._confirm = confirm  # a WAIT command ending each batch; its reply ends every call's
        self._waiting: list[Call] = []
        self._in_flight: collections.deque[_Batch] = collections.deque()
        self._sender: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connection: Connection | None = None
        self._recovering = False  # batches in flight are being sent again: no new one goes

    async def run(self, commands: CommandStack) -> list[Any]:
        """Replies to ``commands`` in order; a command's error comes back as its reply."""
        return await self.submit(commands)

    def submit(self, commands: CommandStack) -> asyncio.Future[list[Any]]:
        """Queue ``commands`` in the next batch now; their replies, as :meth:`run` gives them,
        once it is back. The caller goes on meanwhile (and must await the future)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._waiting.append((commands, future))
        self._send_soon(loop)
        return future

    def _send_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start a sender, if there is room for a batch and none is on its way. A task's first
        step runs after the callbacks already scheduled: the tasks that are ready now add
        their commands to this batch before it leaves. Sender and reader run in an empty
        context, as they serve many jobs (no one job's log fields)."""
        if self._sender is None and not self._recovering and len(self._in_flight) < DEPTH:
            self._sender = loop.create_task(self._send(), context=contextvars.Context())

    async def _send(self) -> None:
        batch: _Batch | None = None
        try:
            # a caller cancelled before its batch left sends nothing, as without batching
            calls = [call for call in self._waiting if not call[1].done()]
            self._waiting = []
            if not calls:
                return
            stack, sizes = script_merge.merge(
                [command for commands, _ in calls for command in commands]
            )
            if self._confirm is not None:
                stack.append((self._confirm, {}))
            batch = _Batch(calls, stack, sizes)
            self._in_flight.append(batch)  # before any await: the reader reads in this order
            if self._reader is None:
                self._reader = asyncio.get_running_loop().create_task(
                    self._read_all(), context=contextvars.Context()
                )
            if self._connection is None:
                self._connection = await self._redis.connection_pool.get_connection()
            await self._write(self._connection, [batch])
            batch.written.set_result(None)
        except BaseException as exc:  # the reader sends it again, or fails it
            if batch is not None and not batch.written.done():
                batch.written.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._sender = None
            if self._waiting:  # calls made while this batch was being written
                self._send_soon(asyncio.get_running_loop())
            elif batch is None:
                await self._release_if_idle()

    async def _write(self, connection: Connection, batches: list[_Batch]) -> None:
        commands = [command for batch in batches for command, _ in batch.stack]
        # no health check: its PING's reply would come between two batches' replies
        await connection.send_packed_command(connection.pack_commands(commands), check_health=False)

    async def _read_all(self) -> None:
        """Read the batches in flight as they come, until none is left."""
        try:
            while self._in_flight:
                batch = self._in_flight[0]
                try:
                    await batch.written
                    assert self._connection is not None
                    batch.answer(await self._read(self._connection, batch), self._confirmed)
                    self._in_flight.popleft()
                    self._send_soon(asyncio.get_running_loop())  # there is room again
                except Exception as exc:
                    await self._recover(exc)
                except BaseException as exc:  # cancelled: the replies are left unread
                    self._fail_in_flight(exc)
                    if self._connection is not None:
                        await _disconnect(self._connection)
                    raise
        finally:
            self._reader = None
            await self._release_if_idle()

    @property
    def _confirmed(self) -> bool:
        return self._confirm is not None

    async def _read(self, connection: Connection, batch: _Batch) -> list[Any]:
        replies: list[Any] = []
        parse = self._redis.parse_response
        for args, options in batch.stack:
            try:
                replies.append(await parse(connection, args[0], **options))
            except ResponseError as error:  # the command's own error: its reply
                replies.append(error)
        return replies

    async def _recover(self, error: Exception) -> None:
        """The connection failed with ``error``: send every batch in flight again on a new
        one, under the client's retry policy, as redis-py retries a pipeline; fail them all
        when it gives up."""
        self._recovering = True
        try:
            if self._sender is not None:  # let a write under way end before the resend
                await asyncio.wait([self._sender])
            connection = self._connection
            if connection is None:  # the pool had no connection to give
                self._fail_in_flight(error)
                return
            first: list[BaseException] = [error]

            async def attempt() -> None:
                if first:  # the error already met goes through the policy first
                    raise first.pop()
                await self._write(connection, list(self._in_flight))
                while self._in_flight:
                    batch = self._in_flight[0]
                    batch.answer(await self._read(connection, batch), self._confirmed)
                    self._in_flight.popleft()

            async def disconnect_or_raise(failure: BaseException) -> None:
                await connection.disconnect()
                retried = connection.retry_on_error
                if not retried or not isinstance(failure, tuple(retried)):
                    raise failure

            try:
                await connection.retry.call_with_retry(attempt, disconnect_or_raise)
            except BaseException as exc:
                self._fail_in_flight(exc)
                await _disconnect(connection)  # replies may be left unread on it
                if not isinstance(exc, Exception):
                    raise
        finally:
            self._recovering = False
            if self._waiting:
                self._send_soon(asyncio.get_running_loop())

    def _fail_in_flight(self, exc: BaseException) -> None:
        while self._in_flight:
            self._in_flight.popleft().fail(exc)

    async def _release_if_idle(self) -> None:
        """Give the connection back to the pool once nothing is waiting or in flight."""
        connection = self._connection
        if connection is None or self._waiting or self._in_flight or self._sender or self._reader:
            return
        self._connection = None
        await self._redis.connection_pool.release(connection)
