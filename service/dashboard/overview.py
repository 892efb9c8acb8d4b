"""What the dashboard's overview shows, read from Redis in a few pipelined round trips.

The queue's counts (waiting, deferred, running) and the oldest waiting job's age come from
service.engine.queue_counts; running jobs
from the tracking wrapper's running set, confirmed by arq's in-progress keys; successes
from the tracking wrapper's capped history; failures from the failed-jobs list
(service.records.failed_jobs), the one Retry and Delete act on; workers from their health keys.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from service.dashboard.masking import short_arguments
from service.engine.arq_api import in_progress_key_prefix, job_key_prefix, result_key_prefix
from service.engine.queue_counts import queue_counts
from service.engine.queues import QueueLayout
from service.records import arguments, failed_jobs
from service.records.failed_jobs import DeadJob
from service.records.workers import WorkerState, alive
from service.store import keys
from service.store.serialization import deserialize
from settings import Settings

LISTED = 20  # rows per table


@dataclass(frozen=True, slots=True)
class JobLine:
    """One job in one of the overview's tables; times are seconds since the epoch."""

    job_id: str
    function: str
    arguments: str
    attempt: int
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    next_attempt_at: float | None = None
    error: str | None = None
    retryable: bool = True  # a failure whose arguments were kept whole (records.arguments)


@dataclass(frozen=True, slots=True)
class QueueState:
    waiting: int  # due now, waiting for a worker (not the running ones)
    deferred: int  # due later
    running: int  # a worker runs them now
    oldest_waiting_age: float | None  # seconds the longest-waiting due job has waited


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """One named queue (all its priorities): its jobs and the live workers serving it."""

    name: str
    state: QueueState
    workers: int


@dataclass(frozen=True, slots=True)
class Overview:
    now: float
    queue: QueueState  # every queue together
    running: list[JobLine]
    waiting: list[JobLine]  # deferred or retrying: due later
    successes: list[JobLine]
    failures: list[JobLine]
    failures_total: int
    workers: list[WorkerState]
    queues: list[QueueDepth] = field(default_factory=list)


def _seconds(ms: Any) -> float | None:
    if ms in (None, b"", ""):
        return None
    return int(ms) / 1000


def _decode_meta(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {key.decode(): value.decode() for key, value in raw.items()}


def _held_by(meta: dict[str, str]) -> str | None:
    """Why a deferred job waits when its destination's circuit breaker holds it back (the
    worker clears it as the job is let through), in place of an older attempt's error."""
    held = meta.get("waiting_for")
    return f"waiting for the {held}" if held else None


def _line(job_id: str, stored: bytes | None, meta: dict[str, str], **extra: Any) -> JobLine:
    """A row from arq's stored job or result (arguments) and the tracking hash (attempts)."""
    data: dict[str, Any] = {}
    if stored is not None:
        try:
            data = deserialize(stored)
        except (ValueError, TypeError):
            data = {}
    args, kwargs = list(data.get("a") or []), dict(data.get("k") or {})
    kept = arguments.decode(meta.get("arguments"))
    if "r" in data and kept is not None:  # a result keeps no arguments; the hash a copy
        args, kwargs = kept.args, kept.kwargs
    return JobLine(
        job_id=job_id,
        function=str(data.get("f") or meta.get("function") or "?"),
        arguments=short_arguments(args, kwargs),
        attempt=max(int(data.get("t") or 0), int(meta.get("attempts") or 0)),
        enqueued_at=_seconds(data.get("et")),
        started_at=_seconds(meta.get("started_at")),
        finished_at=_seconds(meta.get("finished_at")),
        error=_held_by(meta) or meta.get("last_error") or None,
        **extra,
    )


async def queue_state(redis: Redis, queues: str | Sequence[str], now_ms: int) -> QueueState:
    """Waiting, deferred and running apart (service.engine.queue_counts): jobs stay in arq's
    queue while they run, so its size and its oldest due entry would count them as waiting.
    ``queues``: one sorted set or several, summed (service.engine.queues)."""
    counts = await queue_counts(redis, queues, now_ms)
    return QueueState(
        waiting=counts.waiting,
        deferred=counts.deferred,
        running=counts.running,
        oldest_waiting_age=counts.oldest_waiting_age(now_ms),
    )


async def _lines(
    redis: Redis, ids: list[str], prefix: str, extra: dict[str, dict[str, Any]] | None = None
) -> list[JobLine]:
    """Rows for ``ids``, reading arq's keys under ``prefix`` (job or result) and the meta."""
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.get(prefix + job_id)
            pipe.hgetall(keys.job_meta(job_id))
        replies = await pipe.execute()
    extra = extra or {}
    return [
        _line(job_id, stored, _decode_meta(meta), **extra.get(job_id, {}))
        for job_id, stored, meta in zip(ids, replies[::2], replies[1::2], strict=True)
        if stored is not None or meta
    ]


async def running_jobs(redis: Redis) -> list[JobLine]:
    """Jobs a worker runs now; entries whose arq in-progress key is gone are dropped."""
    ids = [raw.decode() for raw in await redis.zrange(keys.running(), 0, -1)]
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.exists(in_progress_key_prefix + job_id)
        flags = await pipe.execute()
    gone = [job_id for job_id, flag in zip(ids, flags, strict=True) if not flag]
    if gone:  # a killed worker's job: arq re-queues it, our running set forgets it
        await redis.zrem(keys.running(), *gone)
    live = [job_id for job_id, flag in zip(ids, flags, strict=True) if flag]
    return await _lines(redis, live[:LISTED], job_key_prefix)


async def waiting_jobs(redis: Redis, queues: str | Sequence[str], now_ms: int) -> list[JobLine]:
    """Deferred and retrying jobs (due later) of every one of ``queues``, soonest first."""
    async with redis.pipeline(transaction=False) as pipe:
        for key in [queues] if isinstance(queues, str) else queues:
            pipe.zrangebyscore(key, f"({now_ms}", "+inf", start=0, num=LISTED, withscores=True)
        pages: list[list[tuple[bytes, float]]] = await pipe.execute()
    due = sorted((row for page in pages for row in page), key=lambda row: row[1])[:LISTED]
    ids = [raw.decode() for raw, _ in due]
    at = {raw.decode(): {"next_attempt_at": score / 1000} for raw, score in due}
    return await _lines(redis, ids, job_key_prefix, at)


async def recent_successes(redis: Redis) -> list[JobLine]:
    """The latest successes, newest first, from the tracking history."""
    recent: list[bytes] = await redis.lrange(keys.recent_finished(), 0, -1)  # type: ignore[misc]
    unique = list(dict.fromkeys(raw.decode() for raw in recent))  # a re-run appears once
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in unique:
            pipe.hget(keys.job_meta(job_id), "outcome")
        outcomes = await pipe.execute()
    ok = [job_id for job_id, o in zip(unique, outcomes, strict=True) if o == b"success"]
    return await _lines(redis, ok[:LISTED], result_key_prefix)


def _failed_line(job: DeadJob) -> JobLine:
    return JobLine(
        job_id=job.job_id,
        function=keys.job_of_cron(job.function),
        arguments=short_arguments(job.args, job.kwargs),
        attempt=job.attempts,
        enqueued_at=_seconds(job.enqueued_at),
        finished_at=job.failed_at / 1000,
        error=job.reason,
        retryable=not job.truncated,
    )


async def queue_depths(
    redis: Redis, layout: QueueLayout, workers: list[WorkerState], now_ms: int
) -> list[QueueDepth]:
    """Each named queue's jobs and the live workers serving it."""
    return [
        QueueDepth(
            name=queue,
            state=await queue_state(redis, layout.keys_of(queue), now_ms),
            workers=sum(worker.serves(queue) for worker in workers),
        )
        for queue in layout.queues
    ]


async def overview(redis: Redis, settings: Settings, layout: QueueLayout | None = None) -> Overview:
    """Everything the dashboard's overview shows, over every queue of ``layout`` (None:
    the default queue only)."""
    now = time.time()
    now_ms = int(now * 1000)
    layout = layout or QueueLayout(base=settings.queue_name)
    all_keys = layout.all_keys()
    workers = await alive(redis, settings.queue_name)
    failed = await failed_jobs.page(
        redis,
        offset=0,
        limit=LISTED,
        max_age=settings.dead_letter_max_age,
        max_jobs=settings.dead_letter_max_jobs,
    )
    return Overview(
        now=now,
        queue=await queue_state(redis, all_keys, now_ms),
        running=await running_jobs(redis),
        waiting=await waiting_jobs(redis, all_keys, now_ms),
        successes=await recent_successes(redis),
        failures=[_failed_line(job) for job in failed.jobs],
        failures_total=failed.total,
        workers=workers,
        queues=await queue_depths(redis, layout, workers, now_ms),
    )
