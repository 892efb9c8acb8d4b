"""Cron schedules the operator can steer: paused per schedule, their runs kept, missed runs
caught up.

arq's cron queues each schedule's run at its time (``cron:<job>:<due ms>``, so several
workers queue it once) and knows nothing else. Around each scheduled run, :func:`steered`
reads the schedule's pause (service.records.schedules) and marks the due time as seen in the
same round trip; a paused schedule's run is skipped and listed as such; every other run is
listed with its outcome and duration (one more round trip when it ends: cron runs are rare).

arq also skips a run whose time passed while no worker was up. :func:`catch_up`, at a
worker's start, queues the latest such run of each schedule if it was due within
CRON_CATCH_UP seconds and no run of it was seen. A ``SET NX`` on the seen marker decides which
of several starting workers queues it, and the run's arq job id is the one arq would have
used, so a run already queued by arq (say, the queue is paused) is not queued twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from datetime import datetime, timedelta
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.engine.arq_api import WorkerCoroutine
from service.queue.enqueue import enqueue_job
from service.records import schedules
from service.records.schedules import ScheduleRun, due_times
from service.records.times import now_ms
from service.runtime import Job, Registry
from service.store import keys
from service.store.serialization import describe_exception
from service.worker.observe import run_outcome
from settings import Settings

logger = logging.getLogger("jobservice.cron")

SEEN_MARGIN = 600  # seconds a seen marker outlives the catch-up window


def run_id(cron_name: str, due: datetime) -> str:
    """arq's job id for the run due at ``due`` (arq's ``to_unix_ms``)."""
    return f"{cron_name}:{round(due.timestamp() * 1000)}"


def latest_due(fields: dict[str, Any], now: datetime, window: float) -> datetime | None:
    """The schedule's latest time at or before ``now`` and at most ``window`` seconds ago.

    next_cron only goes forward, so look back 1 s, 2 s, 4 s... (at most ``window``) until a
    time falls in the span, then walk forward to the latest one: a handful of steps for a
    daily schedule, as for one every second."""
    span = 1.0
    while True:
        span = min(span, window)
        start = now - timedelta(seconds=span)
        times = due_times(fields, start)
        latest = None
        for due in times:
            if due.timestamp() > now.timestamp():  # instants: wall times repeat in autumn
                break
            latest = due
        if latest is not None or span >= window:
            return latest
        span *= 2


async def catch_up(
    redis: ArqRedis,
    settings: Settings,
    registry: Registry,
    now: datetime,
    *,
    served: tuple[str, ...] | None = None,
) -> list[str]:
    """Queue each schedule's missed run (see the module docstring), on its own queue; only
    the schedules of the ``served`` queues (None: all); the run ids queued."""
    window = settings.cron_catch_up
    if window <= 0:
        return []
    queued = []
    for job in registry.scheduled():
        if served is not None and job.queue not in served:
            continue
        assert job.cron is not None
        assert job.cron_name is not None
        due = latest_due(job.cron.fields(), now, window)
        if due is None:
            continue
        missed = run_id(job.cron_name, due)
        seen = await redis.set(
            keys.schedule_run_seen(missed), "catch-up", nx=True, ex=window + SEEN_MARGIN
        )
        if seen and await enqueue_job(
            redis, job.cron_name, missed, {}, queue=job.queue, priority=job.priority
        ):
            logger.info("cron %s missed its run due at %s: queued now", job.name, due)
            queued.append(missed)
    logger.info("cron catch-up done: %d missed run(s) queued", len(queued))
    return queued


async def _record(redis: Redis, cron_name: str, run: ScheduleRun) -> None:
    """Keep the run in the schedule's list; a Redis error here must not change the run's
    own outcome, which arq and the tracking wrapper have already recorded."""
    try:
        await schedules.record_run(redis, cron_name, run)
    except (RedisError, OSError):
        logger.warning("could not record the run %s of %s", run.job_id, cron_name)


def steered(job: Job, settings: Settings, run: WorkerCoroutine) -> WorkerCoroutine:
    """``run`` (the wrapped job) as a schedule's run: skipped while its schedule is paused,
    its outcome and duration kept in the schedule's list either way."""
    cron_name = str(job.cron_name)
    seen_for = settings.cron_catch_up + SEEN_MARGIN

    @functools.wraps(run)
    async def scheduled(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        redis: Redis = ctx["redis"]
        job_id: str = ctx["job_id"]
        started = now_ms()
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.paused_schedules(), cron_name)
            pipe.set(keys.schedule_run_seen(job_id), "run", ex=seen_for)
            paused_at, _ = await pipe.execute()
        if paused_at is not None:
            logger.info("cron %s is paused: its run %s is skipped", job.name, job_id)
            await _record(redis, cron_name, ScheduleRun(job_id, "skipped", started, started))
            return None
        failure: BaseException | None = None
        try:
            return await run(ctx, *args, **kwargs)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            error = None
            if failure is not None and not isinstance(failure, asyncio.CancelledError):
                error = describe_exception(failure)
            entry = ScheduleRun(job_id, run_outcome(failure), started, now_ms(), error)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(_record(redis, cron_name, entry))

    return scheduled
