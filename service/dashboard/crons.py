"""The cron schedules as the dashboard shows them: last run, its outcome, the next run.

The schedules are the worker's own (``worker_options(settings)["cron_jobs"]``), so the
dashboard cannot disagree with what the workers will actually run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from arq.cron import CronJob, next_cron
from redis.asyncio import Redis

from service.queue.enqueue import JobName
from service.store import keys
from settings import Settings


@dataclass(frozen=True, slots=True)
class CronSchedule:
    name: str  # arq's cron name, e.g. "cron:daily_report"
    function: JobName
    next_run: datetime
    last_job_id: str | None
    last_outcome: str | None  # "success", "failure", or None while running / never run
    last_finished_at: float | None  # seconds since the epoch
    last_error: str | None


class UnknownCronError(LookupError):
    """No cron schedule has this name."""


def schedules(settings: Settings) -> list[CronJob]:
    from service.worker.options import (
        worker_options,  # the worker's wiring imports every job module
    )

    crons: list[CronJob] = worker_options(settings)["cron_jobs"]
    return crons


def function_of(cron: CronJob) -> JobName:
    return JobName(cron.name.removeprefix("cron:"))


def find(settings: Settings, name: str) -> JobName:
    """The job a cron schedule runs, for "Run now"; UnknownCronError for any other name."""
    for cron in schedules(settings):
        if cron.name == name:
            return function_of(cron)
    raise UnknownCronError(name)


def next_run(cron: CronJob, now: datetime) -> datetime:
    return next_cron(
        now,
        month=cron.month,
        day=cron.day,
        weekday=cron.weekday,
        hour=cron.hour,
        minute=cron.minute,
        second=cron.second,
        microsecond=cron.microsecond,
    )


async def cron_schedules(redis: Redis, settings: Settings) -> list[CronSchedule]:
    """Every schedule with its function's latest finished run (scheduled or run by hand)."""
    now = datetime.now(settings.timezone)
    crons = schedules(settings)
    functions = [function_of(cron) for cron in crons]
    last_ids = await redis.hmget(keys.last_run(), functions)  # type: ignore[misc]
    found = []
    for cron, function, raw_id in zip(crons, functions, last_ids, strict=True):
        job_id = raw_id.decode() if raw_id else None
        meta: dict[bytes, bytes] = {}
        if job_id:
            meta = await redis.hgetall(keys.job_meta(job_id))  # type: ignore[misc]
        finished = meta.get(b"finished_at")
        found.append(
            CronSchedule(
                name=cron.name,
                function=function,
                next_run=next_run(cron, now),
                last_job_id=job_id if meta else None,
                last_outcome=meta[b"outcome"].decode() if b"outcome" in meta else None,
                last_finished_at=int(finished) / 1000 if finished else None,
                last_error=(meta.get(b"last_error") or b"").decode() or None,
            )
        )
    return found
