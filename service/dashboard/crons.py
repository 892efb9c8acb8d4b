"""The cron schedules as the dashboard shows them: last run, its outcome, the next run.

The schedules are the job declarations' own (the registry the worker also builds its cron
jobs from), so the dashboard cannot disagree with what the workers will actually run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis

from service.engine.arq_api import next_cron
from service.runtime import Job, Registry
from service.store import keys
from settings import Settings


@dataclass(frozen=True, slots=True)
class CronSchedule:
    name: str  # arq's cron name, e.g. "cron:daily_report"
    function: str
    next_run: datetime
    last_job_id: str | None
    last_outcome: str | None  # "success", "failure", or None while running / never run
    last_finished_at: float | None  # seconds since the epoch
    last_error: str | None


class UnknownCronError(LookupError):
    """No cron schedule has this name."""


def find(registry: Registry, name: str) -> Job:
    """The job a cron schedule runs, for "Run now"; UnknownCronError for any other name."""
    for job in registry.scheduled():
        if job.cron_name == name:
            return job
    raise UnknownCronError(name)


def next_run(job: Job, now: datetime) -> datetime:
    """When the worker will next run ``job`` on its schedule, as arq computes it."""
    assert job.cron is not None
    return next_cron(now, **job.cron.fields())


async def cron_schedules(
    redis: Redis, settings: Settings, registry: Registry
) -> list[CronSchedule]:
    """Every schedule with its function's latest finished run (scheduled or run by hand)."""
    now = datetime.now(settings.timezone)
    jobs = registry.scheduled()
    last_ids = await redis.hmget(keys.last_run(), [job.name for job in jobs])  # type: ignore[misc]
    found = []
    for job, raw_id in zip(jobs, last_ids, strict=True):
        job_id = raw_id.decode() if raw_id else None
        meta: dict[bytes, bytes] = {}
        if job_id:
            meta = await redis.hgetall(keys.job_meta(job_id))  # type: ignore[misc]
        finished = meta.get(b"finished_at")
        found.append(
            CronSchedule(
                name=str(job.cron_name),
                function=job.name,
                next_run=next_run(job, now),
                last_job_id=job_id if meta else None,
                last_outcome=meta[b"outcome"].decode() if b"outcome" in meta else None,
                last_finished_at=int(finished) / 1000 if finished else None,
                last_error=(meta.get(b"last_error") or b"").decode() or None,
            )
        )
    return found
