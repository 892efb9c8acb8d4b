"""Circuit breakers around the jobs that declare a destination (``Job.destination``: each
webhook host, the SMTP server), shared by every worker through Redis (service.records.breakers).

Before a job starts, one script call asks its destination's breaker whether it may run: a
closed breaker lets it through, an open one sends it back to the queue until the next probe
(service.engine.postpone: no attempt, no try used, its status says whom it waits for), and a
half-open one lets exactly one job through as the probe. After the job, what happened tells
the breaker: a transient failure counts (one the destination announced itself, HTTP 429/503
with Retry-After or SMTP 421, opens it at once), a success closes it or resets the count. A
permanent failure or a cancelled attempt says nothing about the destination: not counted,
and a probe that ended so lets the next job probe.

A success costs no second call while the breaker had nothing recorded, so a healthy
destination costs one script call per job. A success racing another worker's failure may
then leave that failure counted: "consecutive" is as seen by Redis, give or take jobs
running at the same moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.engine.postpone import Postponed
from service.engine.queues import queue_keys
from service.observability.metrics import BreakerMetrics
from service.records import breakers
from service.records.times import now_ms
from service.runtime import Job, JobContext, TransientError
from service.runtime.errors import error_chain
from service.store.database import DatabaseUnavailableError
from service.worker.lease import lease_seconds
from settings import Settings

JobFunction = Callable[..., Awaitable[Any]]

REFRESH_SECONDS = 10.0  # how often the metrics re-read every breaker (another worker's changes)
MIN_WAIT = 0.5  # seconds; a job never comes back sooner than this, jitter included

logger = logging.getLogger("jobservice.worker")


def limits(settings: Settings) -> breakers.Limits:
    return breakers.Limits(
        threshold=settings.breaker_failures,
        cooldown=settings.breaker_cooldown,
        cooldown_max=settings.breaker_cooldown_max,
        max_tracked=settings.breaker_max_destinations,
    )


def transient_cause(exc: BaseException) -> TransientError | None:
    """The destination's transient failure behind what the tracking wrapper raised (arq's
    Retry, or the PermanentError of a job out of tries), if that is what happened; not one of
    the job's own (``destination_fault=False``), nor the users database's outage."""
    chain = error_chain(exc)
    if any(isinstance(e, DatabaseUnavailableError) for e in chain):
        return None
    cause = next((e for e in chain if isinstance(e, TransientError)), None)
    return cause if cause is not None and cause.destination_fault else None


def guarded(job: Job, settings: Settings, fn: JobFunction) -> JobFunction:
    """``fn`` (the job, wrapped) run only while its destination's breaker lets it."""
    destination_of = job.destination
    if destination_of is None or settings.breaker_failures == 0:
        return fn
    lease = lease_seconds(job, settings)
    judged_by = limits(settings)

    @functools.wraps(fn)
    async def run(ctx: JobContext, /, *args: Any, **kwargs: Any) -> Any:
        destination = destination_of(kwargs, settings)
        if destination is None:
            return await fn(ctx, *args, **kwargs)
        redis, shown = ctx["redis"], ctx["metrics"].breakers
        verdict = await breakers.admit(
            redis, destination, ctx["job_id"], now_ms(), lease, settings.job_result_ttl
        )
        if verdict.wait is not None:
            shown.show(destination, "open")
            wait = max(verdict.wait * random.uniform(1.0, 1.2), MIN_WAIT)  # not all at once
            raise Postponed(defer=wait)
        if verdict.probe:
            shown.show(destination, "half_open")
        try:
            result = await fn(ctx, *args, **kwargs)
        except BaseException as exc:
            await _ended_badly(ctx, destination, exc, verdict.probe, judged_by)
            raise
        if verdict.probe or verdict.failures:
            await _succeeded(ctx, destination, queue_keys(settings.queue_name, job.queue))
        return result

    return run


async def _succeeded(ctx: JobContext, destination: str, queues: list[str]) -> None:
    """Tell the breaker about a success; the job has succeeded whatever Redis says here (a
    probe whose word is lost is replaced once its lease runs out)."""
    shown = ctx["metrics"].breakers
    with contextlib.suppress(RedisError, OSError):
        closed = await breakers.succeeded(ctx["redis"], destination, queues, now_ms())
        if closed == "closed":
            shown.closed.labels(breakers.kind_of(destination)).inc()
            logger.info("circuit breaker closed: %s", breakers.describe(destination))
        shown.show(destination, "closed")


async def _ended_badly(
    ctx: JobContext, destination: str, exc: BaseException, probe: bool, judged_by: breakers.Limits
) -> None:
    """Tell the breaker about a failed attempt; Redis trouble here must not hide ``exc``."""
    redis, shown = ctx["redis"], ctx["metrics"].breakers
    cause = transient_cause(exc)
    with contextlib.suppress(RedisError, OSError):
        if cause is None:
            if probe:
                await breakers.released(redis, destination, ctx["job_id"])
            return
        failure = breakers.Failure(retry_after=cause.retry_after, unavailable=cause.unavailable)
        transition, state = await breakers.failed(
            redis, destination, ctx["job_id"], now_ms(), failure, judged_by
        )
        if transition == "opened":
            shown.opened.labels(breakers.kind_of(destination)).inc()
            logger.warning("circuit breaker opened: %s", breakers.describe(destination))
        if state:
            shown.show(destination, state)


def start_refresh(redis: Redis, shown: BreakerMetrics) -> asyncio.Task[None]:
    """The metrics' view of every breaker, re-read every REFRESH_SECONDS (a breaker another
    worker or an operator changed)."""
    return asyncio.create_task(_refresh(redis, shown), name="breaker-metrics")


async def _refresh(redis: Redis, shown: BreakerMetrics) -> None:
    while True:
        with contextlib.suppress(RedisError, OSError):
            shown.show_all({b.destination: b.state for b in await breakers.tracked(redis)})
        await asyncio.sleep(REFRESH_SECONDS)


async def stop_refresh(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
