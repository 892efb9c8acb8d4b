"""The worker's view of a Redis outage: one clock for every command, one line each way.

redis-py retries per call, and nests its retries: a command's retry loop reconnects through a
connect retry loop of its own, each with the whole policy. With a count of retries sized for
REDIS_RETRY_SECONDS, a worker whose Redis died retried for that long squared (15 minutes
instead of 30 s), and every command of a shutdown waited out the same again, all in silence.

Here every connection's policy shares one :class:`RedisOutage` (redis-py deep-copies the
policy into each connection; the outage is not copied): the outage starts at the first
failure, any reply ends it, and once it has lasted REDIS_RETRY_SECONDS every retry loop gives
up at once, however deeply nested, so the worker exits for its supervisor to restart it. It
writes one warning when Redis stops answering, one line when it is back (with how many
reconnect attempts that took) and one error when giving up. While Redis is away, the calls of
the whole worker take turns to reconnect (:meth:`RedisOutage.pause`): about one attempt a
second however many jobs wait on Redis (20 jobs waiting: 3.2 attempts a second with a backoff
per call, 1.4 with turns). A connection's handshake is retried too
(:class:`RetriedHandshake`). :meth:`RedisOutage.stop` (a
SIGTERM during the outage) makes every loop give up at once too: nothing can be written then.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import AbstractBackoff

logger = logging.getLogger("jobservice.redis")

T = TypeVar("T")

# How deep the current call is in nested retry loops (a command's, then its connect's): only
# the outermost call's success is a reply from Redis, a connect alone is not.
_depth: contextvars.ContextVar[int] = contextvars.ContextVar("redis_retry_depth", default=0)


class RedisOutage:
    """Since when Redis has not answered, shared by every connection of one client."""

    def __init__(self, give_up_after: float) -> None:
        self.give_up_after = give_up_after
        self.since: float | None = None  # monotonic time of the first failure, None: answering
        self.attempts = 0  # failed attempts during this outage
        self.announced = False
        self.gave_up = False
        self.stopping = False
        self._next_turn = 0.0  # monotonic time of the next reconnect attempt's turn
        self._back: asyncio.Event | None = None  # set when a reply comes, or on a stop

    def __deepcopy__(self, memo: dict[int, Any]) -> RedisOutage:
        return self  # shared on purpose: one outage, whichever connection sees it

    def __copy__(self) -> RedisOutage:
        return self

    @property
    def down(self) -> bool:
        """Redis has failed the calls since the last reply (an outage is under way)."""
        return self.since is not None

    def failed(self, error: BaseException) -> None:
        """One attempt failed; the second in a row announces the outage (one failure alone is
        usually a connection Redis closed, which the next attempt replaces)."""
        if self.since is None:
            self.since = time.monotonic()
        self.attempts += 1
        if self.attempts >= 2 and not self.announced:
            self.announced = True
            logger.warning(
                "Redis does not answer (%s: %s): retrying with backoff for up to %g s "
                "(REDIS_RETRY_SECONDS), then the worker exits",
                type(error).__name__,
                error,
                self.give_up_after,
            )

    def answered(self) -> None:
        """A reply came: the outage, if any, is over."""
        if self.since is None:
            return
        if self.announced:
            logger.warning(
                "Redis answers again after %.1f s (%d reconnect attempts)",
                time.monotonic() - self.since,
                self.attempts,
            )
        self.since, self.attempts, self.announced, self._next_turn = None, 0, False, 0.0
        self._wake_all()

    async def pause(self, backoff: AbstractBackoff) -> None:
        """Wait for this call's turn to try again. The calls of the whole process take turns,
        ``backoff`` apart (after the outage's n-th failure: 0.1 s doubling to 1 s), so fifty
        jobs stuck on a dead Redis make one attempt a second between them, not fifty; all
        wake at once when a call gets a reply or the worker stops, and none waits past the
        moment the worker gives up."""
        now = time.monotonic()
        gap = backoff.compute(max(self.attempts, 1))
        turn = max(now + gap, self._next_turn)
        self._next_turn = turn + gap
        if self.since is not None:
            turn = min(turn, self.since + self.give_up_after)
        if turn <= now:
            return
        if self._back is None:
            self._back = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._back.wait(), turn - now)

    def _wake_all(self) -> None:
        if self._back is not None:
            self._back.set()
            self._back = None

    def exhausted(self, error: BaseException) -> bool:
        """Whether to stop retrying: the outage has lasted REDIS_RETRY_SECONDS, or the worker
        is stopping. Says so once, in one error line."""
        if self.stopping:
            return True
        if self.since is None or time.monotonic() - self.since < self.give_up_after:
            return False
        if not self.gave_up:
            self.gave_up = True
            logger.error(
                "Redis has not answered for %g s (REDIS_RETRY_SECONDS; last error %s: %s): "
                "giving up, the worker exits with status 1 for its supervisor to restart it",
                self.give_up_after,
                type(error).__name__,
                error,
            )
        return True

    def stop(self) -> None:
        """The worker is stopping: retry nothing more, fail every call at its next error."""
        self.stopping = True
        self._wake_all()


class OutageRetry(Retry):
    """redis-py's retry policy with backoff, bounded by one shared outage clock rather than a
    count of retries per call (see the module docstring)."""

    def __init__(self, outage: RedisOutage, backoff: AbstractBackoff) -> None:
        super().__init__(backoff, retries=-1)  # the outage decides when to stop
        self.outage = outage

    async def call_with_retry(
        self, do: Callable[[], Awaitable[T]], fail: Callable[[Any], Any]
    ) -> T:
        outage = self.outage
        depth = _depth.get()
        token = _depth.set(depth + 1)
        try:
            while True:
                try:
                    result = await do()
                except self._supported_errors as error:
                    outage.failed(error)
                    await fail(error)
                    if outage.exhausted(error):
                        raise
                    await outage.pause(self._backoff)
                else:
                    if depth == 0:
                        outage.answered()
                    return result
        finally:
            _depth.reset(token)


def outage_of(retry: object) -> RedisOutage | None:
    """The outage a client's retry policy shares, if it is an :class:`OutageRetry`."""
    return retry.outage if isinstance(retry, OutageRetry) else None


class RetriedHandshake(AbstractConnection):
    """A connection whose connect() retries the handshake too, not only the TCP connect.

    redis-py retries the TCP connect inside connect() but not the handshake after it (CLIENT
    SETINFO, AUTH, SELECT): a connection accepted and then dropped (a proxy in front of a
    dead Redis, a Redis still loading its data) failed the command that asked for it at once
    when the pool opened it, without a retry. Here the whole connect runs under the policy,
    and only a handshake answered ends an outage.
    """

    async def connect(self) -> None:
        if self.is_connected:
            return
        await self.retry.call_with_retry(super().connect, lambda _error: self.disconnect())


def retry_handshakes(client: Redis) -> None:
    """Make ``client``'s future connections retry their handshake (:class:`RetriedHandshake`)."""
    pool = client.connection_pool
    base = pool.connection_class
    if not issubclass(base, RetriedHandshake):
        pool.connection_class = type(f"Retried{base.__name__}", (RetriedHandshake, base), {})
