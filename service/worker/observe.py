"""The outermost job wrapper: a log line at each attempt's end (and at its start, once it has run
for LOG_JOB_START_AFTER), and its metrics.

A line costs the worker about a tenth of a no-op job's CPU, so a quick attempt writes one: its
``job_end`` line carries the queue wait too. An attempt that runs longer also gets its
``job_start`` line, written LOG_JOB_START_AFTER seconds in (unless it has ended by then), so the
log of a worker killed mid-job still names the jobs it was running, the ones a kill can cost.

It takes the enqueuing request's id out of the job's keyword arguments (the job function never
sees it) and puts it, with the job id, function and attempt, on every log line written while
the attempt runs, so searching the logs for one request id finds its jobs' lines too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal

from arq import Retry

from service.observability.origin import REQUEST_ID_KWARG, log_fields
from service.runtime import JobContext
from service.store.serialization import JobError
from service.worker.failures import full_text

logger = logging.getLogger("jobservice.jobs")

JobCoroutine = Callable[..., Awaitable[Any]]
LogFields = Mapping[str, str | int]


def _queue_wait(ctx: JobContext) -> float:
    """Seconds since the job was due: its score is its enqueue time, or its retry/schedule time."""
    return max(0.0, time.time() - ctx["score"] / 1000)


RunOutcome = Literal["success", "retry", "interrupted", "failure"]


def run_outcome(exc: BaseException | None) -> RunOutcome:
    """How a run ended, from what it raised: for its log line and a cron schedule's run list."""
    if exc is None:
        return "success"
    if isinstance(exc, Retry):
        return "retry"
    if isinstance(exc, asyncio.CancelledError):
        return "interrupted"
    return "failure"


def _logged(error: BaseException) -> str:
    """The whole story for the log line: the error the job raised and every error it came
    from (an address, a path: what clients are not shown, service.worker.failures), masked.
    The tracking wrapper's Retry and public JobError only carry it: start at their cause."""
    if isinstance(error, Retry | JobError) and error.__cause__ is not None:
        error = error.__cause__
    return full_text(error)


def _log_start(wait_ms: float, running: float) -> None:
    """The attempt's ``job_start`` line; ``running``: seconds it had run when written."""
    extra = {"event": "job_start", "queue_wait_ms": wait_ms, "running_ms": round(running * 1000)}
    logger.info("job started", extra=extra)


class _LateStarts:
    """The attempts of this process that have not logged their start yet, each logged once it
    has run ``after`` seconds: one timer for all of them, not one per attempt (a timer made and
    cancelled per attempt cost about what the line it saves)."""

    def __init__(self) -> None:
        self._waiting: dict[int, tuple[float, float, float, LogFields]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, attempt: int, wait_ms: float, after: float, fields: LogFields) -> None:
        """Log ``attempt``'s start ``after`` seconds from now, with its log ``fields`` (kept,
        not a copy of the whole context: the line needs only them)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + after
        self._waiting[attempt] = (due, wait_ms, after, fields)
        if self._timer is None or self._loop is not loop:  # none set, or on a loop now gone
            self._loop, self._timer = loop, loop.call_at(due, self._log_due)

    def discard(self, attempt: int) -> None:
        self._waiting.pop(attempt, None)

    def _log_due(self) -> None:
        loop, next_due = asyncio.get_running_loop(), math.inf
        now = loop.time()
        for attempt, (due, wait_ms, after, fields) in list(self._waiting.items()):
            if due <= now:
                del self._waiting[attempt]
                token = log_fields.set(fields)  # the line carries the attempt's fields
                try:
                    _log_start(wait_ms, after)
                finally:
                    log_fields.reset(token)
            else:
                next_due = min(next_due, due)
        self._timer = None if next_due == math.inf else loop.call_at(next_due, self._log_due)


_late_starts = _LateStarts()


def observed(name: str, fn: JobCoroutine) -> JobCoroutine:
    """Log and measure each attempt of the job ``name``; ``fn``'s result and errors pass
    through."""

    @functools.wraps(fn)
    async def run(ctx: JobContext, /, *args: Any, **kwargs: Any) -> Any:
        request_id = kwargs.pop(REQUEST_ID_KWARG, None)
        fields: dict[str, str | int] = {
            "job_id": ctx["job_id"],
            "function": name,
            "attempt": ctx["job_try"],
        }
        if isinstance(request_id, str):
            fields["request_id"] = request_id
            ctx["request_id"] = request_id
        shown = MappingProxyType(fields)
        token = log_fields.set(shown)
        metrics = ctx["metrics"].of(name)
        wait = _queue_wait(ctx)
        metrics.started.inc()
        metrics.queue_wait.observe(wait)
        metrics.in_progress.inc()
        wait_ms = round(wait * 1000, 1)
        start_after = ctx["settings"].log_job_start_after
        if start_after <= 0:
            _log_start(wait_ms, 0.0)
        else:
            _late_starts.add(id(fields), wait_ms, start_after, shown)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await fn(ctx, *args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _late_starts.discard(id(fields))
            seconds = time.perf_counter() - started
            outcome = run_outcome(error)
            metrics.in_progress.dec()
            counter, durations = metrics.outcomes[outcome]
            counter.inc()
            durations.observe(seconds)
            extra: dict[str, Any] = {
                "event": "job_end",
                "outcome": outcome,
                "duration_ms": round(seconds * 1000, 1),
                "queue_wait_ms": wait_ms,
            }
            if outcome in ("failure", "retry") and error is not None:
                extra["error"] = _logged(error)
            level = logging.WARNING if outcome == "failure" else logging.INFO
            logger.log(level, "job finished", extra=extra)
            log_fields.reset(token)

    return run
