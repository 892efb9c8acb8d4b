"""Wraps each job: records its attempts for the status API and applies the retry policy.

Jobs stay plain coroutines that raise :class:`TransientError` or :class:`PermanentError`
(an unreachable users database, ``DatabaseUnavailableError`` from ``ctx["db"]``, counts as
a TransientError for every job); this wrapper turns a transient failure into ``arq.Retry``
with backoff (or a final failure once the tries are spent) and keeps a small per-job hash so
`/task-status` can show attempts, timings and the last error even for jobs that keep no
result.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from arq import Retry

from service.engine.arq_api import result_key_prefix
from service.observability.masking import mask_text
from service.records import (
    arguments,
    attempt_scripts,
    attempts,
    deliveries,
    events,
    failed_jobs,
    function_stats,
    replays,
    stats,
    throughput,
)
from service.records.attempts import Outcome
from service.records.progress import Progress
from service.records.status import time_limit_reason
from service.records.times import iso_from_ms, now_ms
from service.runtime import (
    Job,
    JobContext,
    PermanentError,
    Registry,
    TransientError,
    connection_problem,
)
from service.runtime.errors import error_chain
from service.store import keys
from service.store.database import DatabaseUnavailableError
from service.store.serialization import JobError, describe_exception, deserialize
from service.worker.backoff import backoff_delay
from service.worker.failures import full_text, public_error, public_reason
from service.worker.lease import lease_seconds

JobFunction = Callable[..., Awaitable[Any]]

logger = logging.getLogger("jobservice.jobs")

RECENT_KEPT = 100  # finished job ids the dashboard can list


async def _announce(ctx: JobContext, **data: Any) -> None:
    """Tell live viewers (``GET /jobs/{id}/events``) how the attempt ended; the job leaves
    the dashboard's running set in the same round trip."""
    job_id = ctx["job_id"]
    async with ctx["redis"].pipeline(transaction=False) as pipe:
        pipe.zrem(keys.running(), job_id)
        events.publish_status(pipe, job_id, data)
        await pipe.execute()


async def _write_meta(ctx: JobContext, **fields: str | int) -> None:
    key = keys.job_meta(ctx["job_id"])
    async with ctx["redis"].pipeline(transaction=False) as pipe:
        pipe.hset(key, mapping=fields)
        pipe.expire(key, ctx["settings"].job_result_ttl)
        await pipe.execute()


def _dead_job(
    ctx: JobContext,
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    reason: str,
    *,
    failed_at: int | None = None,
) -> failed_jobs.DeadJob:
    """The failed-jobs entry: its arguments whole when they fit in
    DEAD_LETTER_MAX_ARGUMENT_BYTES, else a cut copy (which cannot be retried)."""
    kept = arguments.bounded(args, kwargs, ctx["settings"].dead_letter_max_argument_bytes)
    return failed_jobs.DeadJob(
        job_id=ctx["job_id"],
        function=name,
        args=kept.args,
        kwargs=kept.kwargs,
        truncated=kept.truncated,
        attempts=ctx["job_try"],
        reason=reason,
        failed_at=failed_at or now_ms(),
        enqueued_at=int(ctx["enqueue_time"].timestamp() * 1000),
    )


@dataclass(frozen=True, slots=True)
class _Run:
    """What one attempt of a job knows about itself, for its history entry."""

    name: str
    run: int
    attempt: int
    started_at: int
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    clock: float  # time.perf_counter() at the start: the run time without the wall clock's steps
    # a replayable job's arguments as its tracking hash keeps them once it has finished
    kept_for_replay: str | None = None


@dataclass(frozen=True, slots=True)
class _Starting:
    """An attempt whose start is on its way to Redis while the job's code runs: all but its
    run number (``run`` 0), which the start's reply gives."""

    this: _Run
    reply: Awaitable[list[bytes | None]]


def _start(
    ctx: JobContext, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], *, last: bool
) -> _Starting:
    """Send the attempt's start, one script call: arq's in-progress lock set to this attempt's
    lease (service.worker.lease), the attempt recorded and marked open (reading what the last
    attempt left), the last attempt's progress cleared, the start announced. ``last``: no try
    is left after this one.

    It is sent, not awaited: the job's code starts at once instead of a round trip later
    (pickup latency, and a busy worker's next jobs start before the last ones' bookkeeping),
    and every write the job makes leaves after it. :func:`_started` reads its reply."""
    settings, job_id = ctx["settings"], ctx["job_id"]
    attempt, started = ctx["job_try"], now_ms()
    status = {"status": "STARTED", "attempts": attempt, "started_at": iso_from_ms(started)}
    expected = ""
    if last:  # filed as failed if this attempt is lost
        expected = _dead_job(ctx, name, args, kwargs, failed_jobs.LAST_ATTEMPT_LOST).to_json()
    reply = attempt_scripts.submit_start(
        ctx["redis"],
        job_id,
        lock_ms=int(ctx["lease"] * 1000),
        function=name,
        attempt=attempt,
        started_ms=started,
        ttl=settings.job_result_ttl,
        status_event=events.encode("status", status),
        expected=expected,
    )
    return _Starting(_Run(name, 0, attempt, started, args, kwargs, time.perf_counter()), reply)


async def _started(ctx: JobContext, starting: _Starting) -> _Run:
    """The attempt once its start is written; an earlier attempt that a dead worker left open
    is recorded as interrupted (before this attempt's end, which is written after this)."""
    lost, last_start, requeued = await starting.reply
    run = int(requeued or 0) + 1
    this = dataclasses.replace(starting.this, run=run)
    if lost is not None:  # the worker running the last attempt died before closing it
        settings = ctx["settings"]
        entry = attempts.make_attempt(
            run=run,
            attempt=int(lost),
            started_at=int(last_start or 0),
            finished_at=None,
            outcome="interrupted",
            error=attempts.LOST_ATTEMPT,
        )
        await attempts.record(
            ctx["redis"],
            ctx["job_id"],
            entry,
            keep=settings.job_history_max,
            ttl=settings.job_result_ttl,
        )
    return this


# how a counted attempt shows in the throughput graphs (a retry does not end the job) and in
# its function's last-hour figures
_graphed: dict[str, tuple[throughput.Finished | None, function_stats.Outcome]] = {
    "success": ("c", "success"),
    "failure": ("f", "failure"),
    "retry": (None, "retry"),
}


async def _close(
    ctx: JobContext,
    this: _Run,
    outcome: Outcome,
    error: str = "",
    /,
    *,
    status: dict[str, Any] | None = None,
    counted: bool = False,
    meta: dict[str, str | int],
    last_write: bool = False,
) -> int:
    """Close the attempt in one script call (service.records.attempt_scripts): its history entry and
    ``meta``; the day's count for ``outcome`` if ``counted``; ``status`` told to live viewers
    as the job leaves the running set. Returns when the attempt finished (ms).

    ``last_write``: nothing follows it in this attempt, so under our engine the call goes with
    the engine's finishing call (ctx["finish_with"], service.engine.finish) instead of on its
    own: one call fewer per job, and a success is announced in the same step as its result
    is stored."""
    settings, finished = ctx["settings"], now_ms()
    delivery = ctx.pop("delivery", None)  # the job's ledger entry for this attempt, if any
    entry = attempts.make_attempt(
        run=this.run,
        attempt=this.attempt,
        started_at=this.started_at,
        finished_at=finished,
        outcome=outcome,
        error=error,
        delivery=None if delivery is None else deliveries.stored_delivery(delivery),
    )
    done = outcome in ("success", "failure")  # counted among the recent and last runs
    ended = done or outcome == "cancelled"  # the job will not run again
    graphed = _graphed.get(outcome) if counted else None
    if status is not None and ended:
        status["finished_at"] = iso_from_ms(finished)
    end = attempt_scripts.end_call(
        ctx["redis"],
        ctx["job_id"],
        entry=attempts.encode(entry),
        keep=settings.job_history_max,
        ttl=settings.job_result_ttl,
        meta={"finished_at": finished, **meta} if ended else meta,
        stats_key=keys.daily_stats(stats.today(settings.timezone)),
        stats_field=f"job:{this.name}:{outcome}" if counted else "",
        recent_keep=RECENT_KEPT,
        finished_function=this.name if done else "",
        # an interrupted last attempt may still be failed by arq: its expected entry stays
        keep_expected=outcome == "interrupted",
        status_event="" if status is None else events.encode("status", status),
    )
    if last_write and "finish_with" in ctx:
        ctx["finish_with"] = end
    else:
        await end.script.run(ctx["redis"], end.keys, end.args)
    if graphed is not None:  # counted in memory, written once a second (records.tallies)
        run = time.perf_counter() - this.clock
        wait = max(0, this.started_at - ctx["score"]) / 1000
        ctx["tallies"].ended(finished, graphed[0], this.name, graphed[1], run, wait)
    return finished


async def _finish(
    ctx: JobContext, this: _Run, outcome: Outcome, error: str = "", result: Any = None
) -> None:
    """Record how the job ended; a success takes one script call (it is every job's last step).

    The tracking hash keeps what the dashboard shows of a finished job (arq's result keeps no
    arguments): a masked, bounded copy of them, and the id of the request that queued it."""
    meta: dict[str, str | int] = {"outcome": outcome, "last_error": error, **_shown(ctx, this)}
    if this.kept_for_replay is not None:  # written with the rest: no extra round trip
        meta[replays.KEPT_FIELD] = this.kept_for_replay
    if outcome == "success":  # announced last, once everything else is readable
        done = {"status": "SUCCESS", "result": result}
        await _close(
            ctx, this, outcome, error, status=done, counted=True, meta=meta, last_write=True
        )
        return
    finished = await _close(ctx, this, outcome, error, counted=True, meta=meta)
    settings = ctx["settings"]
    failed = _dead_job(ctx, this.name, this.args, this.kwargs, error, failed_at=finished)
    await failed_jobs.add(
        ctx["redis"],
        failed,
        max_jobs=settings.dead_letter_max_jobs,
        max_age=settings.dead_letter_max_age,
    )
    await _announce(ctx, status="FAILURE", error=error, finished_at=iso_from_ms(finished))


def _shown(ctx: JobContext, this: _Run) -> dict[str, str | int]:
    shown: dict[str, str | int] = {"arguments": arguments.preview(this.args, this.kwargs)}
    request_id = ctx.get("request_id")
    if request_id:
        shown["request_id"] = request_id
    return shown


async def _interrupted(ctx: JobContext, this: _Run) -> None:
    """The attempt's task was cancelled: by DELETE /jobs/{id}, a time limit or a shutdown."""
    meta = keys.job_meta(ctx["job_id"])
    raw = await ctx["redis"].hget(meta, "cancel_reason")  # type: ignore[misc]
    if raw is not None:
        reason = raw.decode()
        status = {"status": "CANCELLED", "error": reason}
        fields = {"outcome": "cancelled", "last_error": reason, **_shown(ctx, this)}
        await _close(ctx, this, "cancelled", reason, status=status, meta=fields)
        return
    ctx["attempt_interrupted"] = True  # after_job learns from arq whether it was a time limit
    interrupted = "attempt interrupted"
    await _close(ctx, this, "interrupted", interrupted, meta={"last_error": interrupted})


def _database_unavailable(exc: DatabaseUnavailableError) -> TransientError:
    """The outage as clients see it: a connection failure by its kind, never its address."""
    if any(isinstance(cause, OSError) for cause in error_chain(exc)):
        return TransientError(f"the users database is unavailable: {connection_problem(exc)}")
    return TransientError(str(exc))  # a server's or SQLite's own words ("database is locked")


def retry_delay(ctx: JobContext, exc: TransientError, job: Job) -> float:
    """Backoff for this attempt; a server's Retry-After wins when it asks for longer."""
    base, cap = job.retry.backoff(ctx["settings"])
    delay = backoff_delay(ctx["job_try"], base=base, cap=cap)
    if exc.retry_after is not None:
        delay = max(delay, min(exc.retry_after, cap))
    return delay


def _free_slot(ctx: JobContext) -> asyncio.Event | None:
    """The job's own code has ended: the worker may start the next job while this one's
    bookkeeping is written (service.engine.loop), so the two share round trips. On a full
    worker, the event returned is set once the next jobs have started: the bookkeeping waits
    for it, so that the jobs ending together do not hold up those starting."""
    free_slot = ctx.get("free_slot")
    return None if free_slot is None else free_slot()


def tracked(job: Job) -> JobFunction:
    """Record the job's attempts and map its failures onto arq's retry machinery, as its
    declaration says (tries, backoff, time limit)."""
    fn, name = job.run, job.name

    @functools.wraps(fn)
    async def run(ctx: JobContext, /, *args: Any, **kwargs: Any) -> Any:
        settings = ctx["settings"]
        tries = job.retry.tries(settings)
        ctx["lease"] = lease_seconds(job, settings)
        ctx["progress"] = Progress(ctx["redis"], ctx["job_id"], settings.job_result_ttl)
        ctx.pop("delivery", None)  # each attempt tells its own
        ctx["arguments"] = (args, kwargs)  # for after_job: arq's result keeps none
        attempt = ctx["job_try"]
        starting = _start(ctx, name, args, kwargs, last=attempt >= tries)
        failure: Exception | asyncio.CancelledError | None = None
        try:
            try:
                result = await fn(ctx, *args, **kwargs)
            except DatabaseUnavailableError as exc:
                # any job that reads or writes ctx["db"] waits out an outage like a refused
                # SMTP connection: retried with backoff, the status showing why
                raise _database_unavailable(exc) from exc
            finally:
                handoff = _free_slot(ctx)
        except (Exception, asyncio.CancelledError) as exc:
            failure = exc
        if handoff is not None and not isinstance(failure, asyncio.CancelledError):
            await handoff.wait()  # the next jobs start first (service.engine.loop)
        if isinstance(failure, asyncio.CancelledError):
            with contextlib.suppress(Exception):
                await _interrupted(ctx, await _started(ctx, starting))
            raise failure
        this = await _started(ctx, starting)
        if job.replayable:
            kept = replays.kept_arguments(kwargs, settings.replay_max_argument_bytes)
            this = dataclasses.replace(this, kept_for_replay=kept)
        if failure is None:
            await _finish(ctx, this, "success", result=result)
            return result
        try:
            raise failure
        except TransientError as exc:
            said = mask_text(exc.reason)  # the job's own reason: what clients read
            if attempt >= tries:
                reason = f"gave up after {attempt} attempts: {said}"
                await _finish(ctx, this, "failure", reason)
                raise PermanentError(reason) from exc  # exc: for the log line, not stored
            delay = retry_delay(ctx, exc, job)
            logger.info(
                "job %s attempt %d failed, retrying in %.2fs: %s",
                name,
                attempt,
                delay,
                full_text(exc),
            )
            retry_at = now_ms() + int(delay * 1000)
            status = {"status": "RETRY", "error": said, "next_attempt_at": iso_from_ms(retry_at)}
            fields: dict[str, str | int] = {"last_error": said, "retry_at": retry_at}
            await _close(ctx, this, "retry", said, status=status, counted=True, meta=fields)
            raise Retry(defer=delay) from exc
        except Exception as exc:
            await _finish(ctx, this, "failure", public_reason(exc))
            if isinstance(exc, Retry):
                raise  # arq's own retry, raised by a job's code: arq must still see it
            # arq stores what it is given as the result: the public reason, never exc's text
            raise public_error(exc) from exc

    return run


def arq_failures(registry: Registry) -> Callable[[dict[str, Any]], Awaitable[None]]:
    """arq's ``after_job_end`` hook: file failures arq decides itself (a job past its time
    limit) in the failed-jobs list, as the wrapper cannot see them."""

    async def after_job(ctx: dict[str, Any]) -> None:
        if ctx.get("attempt_interrupted"):  # else the wrapper saw how the attempt ended
            await _record_arq_failure(cast(JobContext, ctx), registry)

    return after_job


async def _record_arq_failure(ctx: JobContext, registry: Registry) -> None:
    redis, settings, job_id = ctx["redis"], ctx["settings"], ctx["job_id"]
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(result_key_prefix + job_id)
        pipe.hget(keys.job_meta(job_id), "outcome")
        raw, outcome = await pipe.execute()
    if raw is None or outcome is not None:
        return  # not finished, or the wrapper already recorded how it ended
    try:
        data = deserialize(raw)
    except ValueError:
        return
    error = data.get("r")
    if data.get("s") or not isinstance(error, JobError) or error.type_name == "CancelledError":
        return
    name = keys.job_of_cron(str(data["f"]))
    args, kwargs = ctx.get("arguments", ((), {}))
    reason = mask_text(describe_exception(error))
    if error.type_name == "TimeoutError":
        job = registry.get(name)
        reason = time_limit_reason(None if job is None else job.seconds(settings))
        await attempts.relabel_last(redis, job_id, "timeout", reason)
    await _write_meta(ctx, finished_at=now_ms(), outcome="failure", last_error=reason)
    await stats.count_today(redis, settings.timezone, **{f"job:{name}:failure": 1})
    # its run time is the limit's, not a measure of the function: counted, not timed
    ctx["tallies"].ended(now_ms(), "f", name, "failure", None, None)
    kept = arguments.bounded(args, kwargs, settings.dead_letter_max_argument_bytes)
    failed = failed_jobs.DeadJob(
        job_id=job_id,
        function=name,
        args=kept.args,
        kwargs=kept.kwargs,
        truncated=kept.truncated,
        attempts=int(data.get("t") or 0),
        reason=reason,
        failed_at=now_ms(),
        enqueued_at=data.get("et"),
    )
    await failed_jobs.add(
        redis, failed, max_jobs=settings.dead_letter_max_jobs, max_age=settings.dead_letter_max_age
    )
