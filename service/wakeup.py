"""Waking the worker when a job is queued, instead of letting it poll Redis twice a second.

arq's worker reads the queue every ``poll_delay`` (0.5 s by default), so an idle worker starts
a job 250 ms late on average; polling every few ms instead burns CPU while idle. Here the
enqueuer pushes a token on a one-element wake list in the same call that queues the job
(service.queue), and the worker, finding nothing to start, blocks on that list (BLPOP) until
a token comes, the next deferred job is due, or half a second passes (for arq's heartbeat
and cron, which run between reads).

arq has no hook around its poll, but its Worker takes a ready-made client (``redis_pool``) and
reads the queue with one ``zrangebyscore`` call per poll. So the waiting lives in that call of
a client subclass that only the worker uses. It also leaves out jobs already running (arq
keeps them in the queue until they finish and would otherwise re-check each of them, three
round trips apiece, on every read).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms

from service import keys
from service.redis import connection_options
from service.serialization import deserialize, serialize
from service.timeouts import StartLockRedis

IDLE_WAIT = 0.5  # seconds; as arq's own poll, so heartbeat and cron keep their rhythm
BUSY_WAIT = 0.1  # with jobs running: one may end with a retry, or be aborted
# Redis checks blocking timeouts ten times a second (hz 10): shorter waits are slept instead.
BLOCK_RESOLUTION = 0.1
MAX_PAGES = 8  # of queue reads past running jobs; beyond, the worker waits BUSY_WAIT and retries


class WakingRedis(StartLockRedis):  # short start locks: service.timeouts
    """arq's client whose read of the ready jobs waits for work instead of coming back empty."""

    wait_for_work = True  # off for burst runs (tests), which stop once the queue is empty
    idle_wait = IDLE_WAIT
    busy_wait = BUSY_WAIT

    async def zrangebyscore(
        self,
        name: Any,
        min: Any,
        max: Any,
        start: int | None = None,
        num: int | None = None,
        withscores: bool = False,
        score_cast_func: type | Callable[..., Any] = float,
    ) -> Any:
        if name != self.default_queue_name or withscores or num is None:
            return await super().zrangebyscore(
                name, min, max, start, num, withscores, score_cast_func
            )
        # the worker's read of its queue: ready jobs, oldest first
        ready, running = await self._ready(name, start, num)
        if ready or not self.wait_for_work:
            return ready
        await self._wait(name, busy=running)
        ready, _ = await self._ready(name, start, num)
        return ready

    # arq writes its health line under one key per queue (what `arq --check` reads); a copy under
    # this worker's own key lets /health and the dashboard tell several workers apart.
    health_check_key: str | None = None
    worker_health_key: str | None = None

    async def psetex(self, name: Any, time_ms: Any, value: Any) -> Any:
        result = await super().psetex(name, time_ms, value)
        if self.worker_health_key is not None and name == self.health_check_key:
            await super().psetex(self.worker_health_key, time_ms, value)
        return result

    async def _ready(self, queue: str, start: int | None, num: int) -> tuple[list[bytes], bool]:
        """Due job ids not running anywhere, and whether some due ones were running.

        Running jobs stay first in the queue until they finish; when a whole page of ``num``
        is running (several busy workers), the next page is read, up to MAX_PAGES.
        """
        offset, running_seen = start or 0, False
        for _ in range(MAX_PAGES):
            due: list[bytes] = await super().zrangebyscore(
                queue, "-inf", timestamp_ms(), start=offset, num=num
            )
            if not due:
                break
            flags = await self.mget([in_progress_key_prefix + job_id.decode() for job_id in due])
            ready = [job_id for job_id, flag in zip(due, flags, strict=True) if flag is None]
            running_seen = running_seen or len(ready) < len(due)
            if ready or len(due) < num:
                return ready, running_seen
            offset += num
        return [], running_seen

    async def _wait(self, queue: str, *, busy: bool) -> None:
        """Block until a job is queued, the next deferred one is due, or the wait runs out."""
        now = timestamp_ms()
        wait = self.busy_wait if busy else self.idle_wait
        upcoming: list[tuple[bytes, float]] = await super().zrangebyscore(
            queue, f"({now}", "+inf", start=0, num=1, withscores=True
        )
        if upcoming:
            wait = min(wait, (upcoming[0][1] - now) / 1000)
        if wait <= 0:
            return
        if wait < BLOCK_RESOLUTION:
            await asyncio.sleep(wait)
            return
        await self.blpop([keys.wake(queue)], timeout=wait)  # type: ignore[arg-type, misc]


def waking_pool(redis: RedisSettings, queue_name: str) -> WakingRedis:
    """The worker's client, built like arq's ``create_pool`` builds one from ``redis``.

    Connections open on first use, so this needs no running loop; the retry policy in
    ``redis`` also covers Redis being down when the worker starts.
    """
    return WakingRedis(
        **connection_options(redis),
        socket_connect_timeout=redis.conn_timeout,
        retry=redis.retry,
        retry_on_timeout=redis.retry_on_timeout,
        retry_on_error=redis.retry_on_error,
        max_connections=redis.max_connections,
        encoding="utf8",
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=queue_name,
    )
