"""Rate limits shared by every worker (``Job.rate``): EMAIL_RATE_LIMIT, WEBHOOK_HOST_RATE_LIMIT.

Before a rate-limited job runs, one script call (service.records.rate_limits) gives it a send
slot: now, a moment from now (the worker sleeps until it, holding the job's slot), or later;
once it has run, a second call says its send has ended (it counts from start to end).
Later, the job is not run: it goes back to the queue to come just before its booked slot
(service.engine.postpone), its try given back, its status saying what it waits for, and the
worker's metrics count the postponement (``jobservice_jobs_postponed{reason="rate_limit"}``).
It never starts, so it writes no attempt and no log line. Cron runs are never gated (arq keeps
their lock after a run, so a postponed one would not run again).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from service.engine.postpone import Postponed
from service.records.rate_limits import end_send, parse_windows, take_slot
from service.runtime import Job, JobContext
from settings import Settings

JobFunction = Callable[..., Awaitable[Any]]

REASON = "rate_limit"  # the postponement's label in the worker's metrics


def rate_limited(job: Job, settings: Settings, fn: JobFunction) -> JobFunction:
    """``fn`` (the job, wrapped) run only in a send slot of its rate limit; else postponed."""
    rate = job.rate
    windows = () if rate is None else parse_windows(rate.limit(settings))
    if rate is None or not windows:
        return fn
    waiting_for = f"rate limit ({rate.setting})"
    lease = job.seconds(settings)  # arq cancels the attempt then: its send has ended

    @functools.wraps(fn)
    async def run(ctx: JobContext, /, *args: Any, **kwargs: Any) -> Any:
        scope = rate.scope(kwargs)
        if scope is None:
            return await fn(ctx, *args, **kwargs)
        verdict = await take_slot(
            ctx["redis"],
            ctx["job_id"],
            scope,
            windows,
            waiting_for=waiting_for,
            ttl=settings.job_result_ttl,
            lease=lease,
        )
        if not verdict.go:
            ctx["metrics"].postponed.labels(job.name, REASON).inc()
            raise Postponed(defer=verdict.wait)
        try:
            if verdict.wait > 0:
                await asyncio.sleep(verdict.wait)
            return await fn(ctx, *args, **kwargs)
        finally:  # the send counts from its start to its end (service.records.rate_limits)
            await end_send(ctx["redis"], scope, windows, verdict.token)

    return run
