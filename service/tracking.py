"""Wraps each job: records its attempts for the status API and applies the retry policy.

Jobs stay plain coroutines that raise :class:`TransientError` or :class:`PermanentError`;
this wrapper turns a transient failure into ``arq.Retry`` with backoff (or a final failure
once the tries are spent) and keeps a small per-job hash so `/task-status` can show
attempts, timings and the last error even for jobs that keep no result.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, TypeVar

from arq import Retry

from jobs.context import JobContext
from jobs.errors import PermanentError, TransientError
from service import keys, stats
from service.backoff import backoff_delay
from service.serialization import describe_exception

P = ParamSpec("P")
R = TypeVar("R")
JobFunction = Callable[Concatenate[JobContext, P], Awaitable[R]]

logger = logging.getLogger("jobservice.jobs")


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _write_meta(ctx: JobContext, **fields: str | int) -> None:
    key = keys.job_meta(ctx["job_id"])
    async with ctx["redis"].pipeline(transaction=False) as pipe:
        pipe.hset(key, mapping=fields)
        pipe.expire(key, ctx["settings"].job_result_ttl)
        await pipe.execute()


async def _finish(ctx: JobContext, name: str, outcome: str, error: str = "") -> None:
    await _write_meta(ctx, finished_at=_now_ms(), outcome=outcome, last_error=error)
    await stats.count(ctx["redis"], ctx["settings"].timezone, **{f"job:{name}:{outcome}": 1})


def retry_delay(ctx: JobContext, exc: TransientError) -> float:
    """Backoff for this attempt; a server's Retry-After wins when it asks for longer."""
    settings = ctx["settings"]
    delay = backoff_delay(
        ctx["job_try"], base=settings.retry_backoff_base, cap=settings.retry_backoff_max
    )
    if exc.retry_after is not None:
        delay = max(delay, min(exc.retry_after, settings.retry_backoff_max))
    return delay


def tracked(fn: JobFunction[P, R]) -> JobFunction[P, R]:
    """Record the job's attempts and map its failures onto arq's retry machinery."""
    name = fn.__name__

    @functools.wraps(fn)
    async def run(ctx: JobContext, /, *args: P.args, **kwargs: P.kwargs) -> R:
        attempt = ctx["job_try"]
        await _write_meta(ctx, function=name, attempts=attempt, started_at=_now_ms())
        try:
            result = await fn(ctx, *args, **kwargs)
        except TransientError as exc:
            if attempt >= ctx["settings"].job_max_tries:
                reason = f"gave up after {attempt} attempts: {exc.reason}"
                await _finish(ctx, name, "failure", reason)
                raise PermanentError(reason) from None
            delay = retry_delay(ctx, exc)
            logger.info(
                "job %s attempt %d failed, retrying in %.2fs: %s", name, attempt, delay, exc
            )
            await _write_meta(ctx, last_error=exc.reason, retry_at=_now_ms() + int(delay * 1000))
            await stats.count(ctx["redis"], ctx["settings"].timezone, **{f"job:{name}:retry": 1})
            raise Retry(defer=delay) from exc
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await _write_meta(ctx, last_error="attempt interrupted")
            raise
        except Exception as exc:
            await _finish(ctx, name, "failure", describe_exception(exc))
            raise
        await _finish(ctx, name, "success")
        return result

    return run
