"""The cron schedules as the dashboard and ``GET /crons`` show them: last run, its outcome,
the next five runs, whether the schedule is paused, and its latest runs.

The schedules are the job declarations' own (the registry the worker also builds its cron
jobs from), and the next runs are computed as arq computes them (service.worker.schedules
uses the same function), so the dashboard cannot disagree with what the workers will run.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime

from redis.asyncio import Redis

from service.records import schedules
from service.records.schedules import ScheduleRun
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
    paused_at: float | None = None  # seconds since the epoch; None: not paused
    next_runs: list[datetime] = field(default_factory=list)  # the next NEXT_RUNS, in the zone
    runs: list[ScheduleRun] = field(default_factory=list)  # the latest, newest first


class UnknownCronError(LookupError):
    """No cron schedule has this name."""


def find(registry: Registry, name: str) -> Job:
    """The job a cron schedule runs, for "Run now"; UnknownCronError for any other name."""
    for job in registry.scheduled():
        if job.cron_name == name:
            return job
    raise UnknownCronError(name)


NEXT_RUNS = 5


def next_run(job: Job, now: datetime) -> datetime:
    """When the worker will next run ``job`` on its schedule, as arq computes it."""
    return next_runs(job, now, 1)[0]


def next_runs(job: Job, now: datetime, count: int = NEXT_RUNS) -> list[datetime]:
    """The next ``count`` times arq will run ``job``, in ``now``'s zone (due_times)."""
    assert job.cron is not None
    return list(itertools.islice(schedules.due_times(job.cron.fields(), now), count))


async def cron_schedules(
    redis: Redis, settings: Settings, registry: Registry
) -> list[CronSchedule]:
    """Every schedule with its function's latest finished run (scheduled or run by hand)."""
    now = datetime.now(settings.timezone)
    jobs = registry.scheduled()
    last_ids = await redis.hmget(keys.last_run(), [job.name for job in jobs])  # type: ignore[misc]
    paused = await schedules.paused(redis)
    runs = await schedules.recent_runs(redis, [str(job.cron_name) for job in jobs])
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
                next_runs=next_runs(job, now),
                paused_at=paused[str(job.cron_name)] / 1000 if job.cron_name in paused else None,
                runs=runs[str(job.cron_name)],
                last_job_id=job_id if meta else None,
                last_outcome=meta[b"outcome"].decode() if b"outcome" in meta else None,
                last_finished_at=int(finished) / 1000 if finished else None,
                last_error=(meta.get(b"last_error") or b"").decode() or None,
            )
        )
    return found
