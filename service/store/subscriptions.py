"""One Redis pub/sub connection per process, shared by everything in it that listens.

A subscription holds a Redis connection of its own for as long as it lasts, so one per live
stream let a single client open thousands of connections and fill Redis's ``maxclients``.
Here a process subscribes once per channel (or pattern), on one connection, whatever the
number of listeners, and a reader task fans each message out in memory to every listener's
bounded queue. A listener that falls further behind than its queue holds is marked
``overflowed`` (its messages are dropped, never buffered without end); the stream behind it
decides what that means (close, or redraw).

A listener is handed over only once Redis has confirmed the subscription, so a read made
after that cannot miss a message published after the read. When the connection breaks, the
reader reconnects (through the pool, so to whichever server the sentinels name master) and
subscribes again; every listener whose subscription came back is marked ``missed``, since
what was published in between is lost, and its owner re-reads what it shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger("jobservice.subscriptions")

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
READ_TIMEOUT = 1.0  # seconds one read waits for a message before the reader looks around
RECONNECT_PAUSE = 0.25  # seconds between two tries while Redis does not answer


class Listener:
    """One consumer's bounded queue of the messages of one channel or pattern."""

    def __init__(self, capacity: int) -> None:
        self._messages: deque[bytes] = deque()
        self._capacity = capacity
        self._wake = asyncio.Event()
        self.overflowed = False  # more than ``capacity`` messages waited: some were dropped
        self.missed = False  # the subscription was lost and is back: messages may be lost

    def deliver(self, data: bytes) -> None:
        if len(self._messages) >= self._capacity:
            self.overflowed = True
        else:
            self._messages.append(data)
        self._wake.set()

    def lost(self) -> None:
        self.missed = True
        self._wake.set()

    def clear(self) -> None:
        """Forget what waits and both flags: the owner has caught up by other means."""
        self._messages.clear()
        self.overflowed = self.missed = False

    async def get(self, within: float) -> bytes | None:
        """The next message, waiting up to ``within`` seconds; None when none came, or when
        ``missed`` or ``overflowed`` is set (the caller looks at them and may reset them)."""
        if not self._messages and not (self.missed or self.overflowed):
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(within, 0)):
                    await self._wake.wait()
        return self._messages.popleft() if self._messages else None


class _Subscription:
    """The listeners of one channel or pattern, and whether Redis has confirmed it."""

    def __init__(self) -> None:
        self.listeners: set[Listener] = set()
        self.confirmed = asyncio.Event()


class SharedSubscriptions:
    """The process's one pub/sub connection (see the module docstring)."""

    def __init__(self, redis: Redis) -> None:
        self._pubsub = redis.pubsub()
        self._tables: dict[bool, dict[bytes, _Subscription]] = {False: {}, True: {}}
        self._reader: asyncio.Task[None] | None = None
        self._unsynced = False  # a (un)subscribe could not be sent: the reader sends it
        self.down_since: float | None = None  # loop time the connection was lost, if it is

    @contextlib.asynccontextmanager
    async def listen(
        self, name: str, *, capacity: int, pattern: bool = False, confirm_within: float | None
    ) -> AsyncIterator[Listener]:
        """A listener of channel ``name`` (a pattern with ``pattern``), for the block's length.

        With ``confirm_within``, it is handed over once Redis has confirmed the subscription
        (a Redis error, or TimeoutError past that many seconds, when it does not); with None,
        at once, even while Redis is away: the reader subscribes once it is back, and until
        then the caller cannot tell what it missed.
        """
        table = self._tables[pattern]
        key = name.encode()
        subscription = table.get(key)
        first = subscription is None
        if subscription is None:
            subscription = table[key] = _Subscription()
        listener = Listener(capacity)
        subscription.listeners.add(listener)
        try:
            self._start_reader()
            if first:
                await self._send(
                    key, pattern, subscribe=True, raise_errors=confirm_within is not None
                )
            if confirm_within is not None:
                async with asyncio.timeout(confirm_within):
                    await subscription.confirmed.wait()
            yield listener
        finally:
            subscription.listeners.discard(listener)
            if not subscription.listeners and subscription.confirmed.is_set():
                await self._drop(key, pattern, subscription)

    def listeners(self) -> int:
        """How many listeners are registered now (for tests and metrics)."""
        return sum(len(s.listeners) for table in self._tables.values() for s in table.values())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    def _start_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="shared-subscriptions")

    async def _send(
        self, key: bytes, pattern: bool, *, subscribe: bool, raise_errors: bool
    ) -> None:
        """(Un)subscribe now; while Redis is away, leave it to the reader."""
        if self.down_since is not None and not raise_errors:
            self._unsynced = True
            return
        pubsub = self._pubsub
        try:
            if subscribe:
                await (pubsub.psubscribe(key) if pattern else pubsub.subscribe(key))
            else:
                await (pubsub.punsubscribe(key) if pattern else pubsub.unsubscribe(key))
        except REDIS_DOWN:
            self._unsynced = True
            if raise_errors:
                raise

    async def _drop(self, key: bytes, pattern: bool, subscription: _Subscription) -> None:
        if self._tables[pattern].get(key) is not subscription:
            return
        del self._tables[pattern][key]
        await self._send(key, pattern, subscribe=False, raise_errors=False)

    async def _sync(self) -> None:
        """Subscribe to what listeners want and the connection lacks, and the reverse."""
        self._unsynced = False
        for pattern, table in self._tables.items():
            have = set(self._pubsub.patterns if pattern else self._pubsub.channels)
            for key in set(table) - have:
                await self._send(key, pattern, subscribe=True, raise_errors=True)
            for key in have - set(table):
                await self._send(key, pattern, subscribe=False, raise_errors=True)

    async def _read(self) -> None:
        """Read messages and fan them out, reconnecting for as long as the process runs."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                if self._unsynced:
                    await self._sync()
                if self._pubsub.connection is None:  # nothing subscribed yet, or never sent
                    await asyncio.sleep(RECONNECT_PAUSE)
                    continue
                message = await self._pubsub.get_message(timeout=READ_TIMEOUT)
            except REDIS_DOWN as exc:
                if self.down_since is None:
                    self.down_since = loop.time()
                    logger.warning("live subscription lost, reconnecting: %s", exc)
                self._unsynced = True
                await asyncio.sleep(RECONNECT_PAUSE)
                continue
            self.down_since = None
            if message is not None:
                await self._dispatch(message)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind in ("message", "pmessage"):
            pattern = kind == "pmessage"
            found = self._tables[pattern].get(message["pattern" if pattern else "channel"])
            for listener in found.listeners if found is not None else ():
                listener.deliver(message["data"])
        elif kind in ("subscribe", "psubscribe"):
            pattern = kind == "psubscribe"
            key = message["channel"]
            found = self._tables[pattern].get(key)
            if found is None:
                return
            if found.confirmed.is_set():  # subscribed again after a reconnect
                for listener in found.listeners:
                    listener.lost()
            else:
                found.confirmed.set()
                if not found.listeners:  # its listener left before the confirmation came
                    await self._drop(key, pattern, found)
