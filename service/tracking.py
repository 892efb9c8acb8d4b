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
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from arq import Retry

from jobs.context import JobContext
from jobs.errors import PermanentError, TransientError
from service import events, keys, stats
from service.backoff import backoff_delay
from service.progress import Progress
from service.serialization import describe_exception

P = ParamSpec("P")
R = TypeVar("R")
JobFunction = Callable[Concatenate[JobContext, P], Awaitable[R]]

logger = logging.getLogger("jobservice.jobs")

RECENT_KEPT = 100  # finished job ids the dashboard can list


def _now_ms() -> int:
    return int(time.time() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


async def _announce(ctx: JobContext, **data: Any) -> None:
    """Tell live viewers (``GET /jobs/{id}/events``) what just happened to the job."""
    await events.publish(ctx["redis"], ctx["job_id"], "status", data)


async def _write_meta(ctx: JobContext, **fields: str | int) -> None:
    key = keys.job_meta(ctx["job_id"])
    async with ctx["redis"].pipeline(transaction=False) as pipe:
        pipe.hset(key, mapping=fields)
        pipe.expire(key, ctx["settings"].job_result_ttl)
        await pipe.execute()


async def _start(ctx: JobContext, name: str, attempt: int, started: int) -> None:
    """One round trip: the attempt recorded, the last attempt's progress cleared, announced."""
    key = keys.job_meta(ctx["job_id"])
    status = {"status": "STARTED", "attempts": attempt, "started_at": _iso(started)}
    async with ctx["redis"].pipeline(transaction=False) as pipe:
        pipe.hdel(key, "progress")
        pipe.hset(key, mapping={"function": name, "attempts": attempt, "started_at": started})
        pipe.expire(key, ctx["settings"].job_result_ttl)
        pipe.publish(keys.job_events(ctx["job_id"]), events.encode("status", status))
        await pipe.execute()


async def _finish(
    ctx: JobContext, name: str, outcome: str, error: str = "", result: Any = None
) -> None:
    finished = _now_ms()
    await _write_meta(ctx, finished_at=finished, outcome=outcome, last_error=error)
    await stats.count(ctx["redis"], ctx["settings"].timezone, **{f"job:{name}:{outcome}": 1})
    async with ctx["redis"].pipeline(transaction=False) as pipe:
        pipe.lpush(keys.recent_finished(), ctx["job_id"])
        pipe.ltrim(keys.recent_finished(), 0, RECENT_KEPT - 1)
        pipe.hset(keys.last_run(), name, ctx["job_id"])
        await pipe.execute()
    if outcome == "success":
        await _announce(ctx, status="SUCCESS", result=result, finished_at=_iso(finished))
    else:
        await _announce(ctx, status="FAILURE", error=error, finished_at=_iso(finished))


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
        attempt, started = ctx["job_try"], _now_ms()
        ctx["progress"] = Progress(ctx["redis"], ctx["job_id"], ctx["settings"].job_result_ttl)
        await _start(ctx, name, attempt, started)
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
            retry_at = _now_ms() + int(delay * 1000)
            await _write_meta(ctx, last_error=exc.reason, retry_at=retry_at)
            await stats.count(ctx["redis"], ctx["settings"].timezone, **{f"job:{name}:retry": 1})
            await _announce(ctx, status="RETRY", error=exc.reason, next_attempt_at=_iso(retry_at))
            raise Retry(defer=delay) from exc
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await _write_meta(ctx, last_error="attempt interrupted")
            raise
        except Exception as exc:
            await _finish(ctx, name, "failure", describe_exception(exc))
            raise
        await _finish(ctx, name, "success", result=result)
        return result

    return run
