"""Waking the worker when a job is queued, instead of letting it poll Redis twice a second.

arq's worker reads the queue every ``poll_delay`` (0.5 s by default), so an idle worker starts
a job 250 ms late on average; polling every few ms instead burns CPU while idle. Here the
enqueuer pushes a token on a one-element wake list in the same call that queues the job
(service.queue.enqueue), and the worker, finding nothing to start, blocks on that list (BLPOP) until
a token comes, the next deferred job is due, or half a second passes (for arq's heartbeat
and cron, which run between reads).

A stock arq client's ``enqueue_job`` pushes no token, so its jobs wait for the next timed read
(up to IDLE_WAIT on an idle worker, BUSY_WAIT on a busy one), as on arq's own worker. Waking
on the queue itself was measured and left out: Redis client tracking or keyspace events send
every worker a message per write to the queue (25-35 us of worker CPU each, busy workers too),
and a shorter idle read costs idle CPU (0.28% of a core at 0.5 s, 0.83% at 0.1 s).

The job loop (service.engine.loop) calls :meth:`WakingRedis.wait_for_jobs` when a claim found
nothing to take; the client is the worker's own, which arq also hands to jobs as ctx["redis"].
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from service.engine.arq_api import timestamp_ms
from service.engine.queues import DEFAULT_QUEUE, queue_keys
from service.store.autopipeline import AutoPipelineRedis
from service.store.outage import RedisOutage, outage_of, retry_handshakes
from service.store.redis import new_client
from service.store.serialization import deserialize, serialize
from settings import ServiceRedisSettings

IDLE_WAIT = 0.5  # seconds; as arq's own poll, so heartbeat and cron keep their rhythm
BUSY_WAIT = 0.1  # with jobs running: one may end with a retry, or be aborted
# Redis checks blocking timeouts ten times a second (hz 10): shorter waits are slept instead.
BLOCK_RESOLUTION = 0.1


class WakingRedis(AutoPipelineRedis):
    """The worker's client: auto-pipelined (service.store.autopipeline), able to wait for work."""

    wait_for_work = True  # off for burst runs (tests), which stop once the queue is empty
    idle_wait = IDLE_WAIT
    busy_wait = BUSY_WAIT
    start_lock_ms = (
        0  # the lock a claimed job starts with (service.worker.timeouts, step 1); 0: arq's
    )

    # the named queues this worker serves (WORKER_QUEUES) and the priorities' ageing step in
    # ms (service.engine.queues), which the job loop reads from here
    served_queues: tuple[str, ...] = (DEFAULT_QUEUE,)
    ageing_ms = 0
    # each cron schedule's queue key ("cron:<job>" -> key): arq's cron queues its runs there
    cron_queues: dict[str, str] | None = None

    # arq writes its health line under one key per queue (what `arq --check` reads); a copy under
    # this worker's own key lets /health and the dashboard tell several workers apart.
    health_check_key: str | None = None
    worker_health_key: str | None = None
    # shared by the retry policy of every connection: whether Redis answers (service.store.outage)
    outage: RedisOutage | None = None

    async def psetex(self, name: Any, time_ms: Any, value: Any) -> Any:
        result = await super().psetex(name, time_ms, value)
        if self.worker_health_key is not None and name == self.health_check_key:
            await super().psetex(self.worker_health_key, time_ms, value)
        return result

    async def zcard(self, name: Any) -> Any:
        """Redis's, except that arq's own queue counts every queue this worker serves: arq's
        burst mode stops once ``zcard(queue_name)`` is 0, and must not while a served named
        queue or priority (service.engine.queues) still holds jobs."""
        if name != self.default_queue_name:
            return await super().zcard(name)
        served = [key for queue in self.served_queues for key in queue_keys(str(name), queue)]
        async with self.pipeline(transaction=False) as pipe:
            for key in served:
                pipe.zcard(key)
            return sum(await pipe.execute())

    async def enqueue_job(self, function: str, *args: Any, **kwargs: Any) -> Any:
        """arq's, except that a cron schedule's run (arq's cron queues them here, on the
        worker's default queue) goes to its schedule's own queue (``cron_queues``)."""
        if self.cron_queues and function in self.cron_queues:
            kwargs["_queue_name"] = self.cron_queues[function]
        return await super().enqueue_job(function, *args, **kwargs)

    async def wait_for_jobs(
        self, queues: Sequence[str], wake_lists: Sequence[str], *, busy: bool
    ) -> None:
        """Block until a job is queued on one of ``wake_lists``' queues, the next deferred
        job of ``queues`` is due, or the wait runs out."""
        now = timestamp_ms()
        wait = self.busy_wait if busy else self.idle_wait
        async with self.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.zrangebyscore(queue, f"({now}", "+inf", start=0, num=1, withscores=True)
            upcoming: list[list[tuple[bytes, float]]] = await pipe.execute()
        due = [rows[0][1] for rows in upcoming if rows]
        if due:
            wait = min(wait, (min(due) - now) / 1000)
        if wait <= 0:
            return
        if wait < BLOCK_RESOLUTION:
            await asyncio.sleep(wait)
            return
        await self.blpop(list(wake_lists), timeout=wait)  # type: ignore[arg-type, misc]


def waking_pool(redis: ServiceRedisSettings, queue_name: str) -> WakingRedis:
    """The worker's client, built like arq's ``create_pool`` builds one from ``redis``
    (through the sentinels when ``redis`` names them).

    Connections open on first use, so this needs no running loop; the retry policy in
    ``redis`` also covers Redis being down when the worker starts.
    """
    connection = {
        "socket_connect_timeout": redis.conn_timeout,
        "retry": redis.retry,
        "retry_on_timeout": redis.retry_on_timeout,
        "retry_on_error": redis.retry_on_error,
        "max_connections": redis.max_connections,
        "encoding": "utf8",
    }
    pool = new_client(
        WakingRedis,
        redis,
        connection,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=queue_name,
    )
    pool.outage = outage_of(redis.retry)
    retry_handshakes(pool)  # a connection's handshake is retried too (store.outage)
    return pool
