"""The daily_report cron job (00:00): yesterday's activity as JSON, emailed when configured."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationInfo, field_validator
from redis.asyncio import Redis

from jobs.mail import MailContext
from jobs.report_mail import SENT, mail_report, mailed_key
from service.runtime import (
    REPORTS,
    Cron,
    Job,
    JobInput,
    PermanentError,
    StorageUnavailableError,
    TransientError,
    day_counts,
    settings_in,
    today,
)
from settings import Settings


def jobs_by_function(counters: dict[str, int]) -> dict[str, dict[str, int]]:
    """``{"job:send_email:success": 3}`` -> ``{"send_email": {"success": 3}}``."""
    table: dict[str, dict[str, int]] = {}
    for field, value in counters.items():
        kind, _, rest = field.partition(":")
        if kind != "job":
            continue
        function, _, outcome = rest.rpartition(":")
        table.setdefault(function, {})[outcome] = value
    return dict(sorted(table.items()))


SECTIONS = 4  # jobs, users, file written, mailed


async def build_report(ctx: MailContext, day: date) -> dict[str, Any]:
    tz, progress = ctx["settings"].timezone, ctx["progress"]
    counters = await day_counts(ctx["redis"], day)
    await progress("jobs counted", done=1, total=SECTIONS)
    start = datetime.combine(day, time.min, tzinfo=tz)
    registered = await ctx["db"].count_registered(start, start + timedelta(days=1))
    await progress("users counted", done=2, total=SECTIONS)
    return {
        "date": day.isoformat(),
        "timezone": ctx["settings"].cron_timezone,
        "generated_at": datetime.now(tz).isoformat(timespec="seconds"),
        "jobs": jobs_by_function(counters),
        "emails_sent": counters.get("emails_sent", 0),
        "images_processed": counters.get("images_processed", 0),
        "users_registered": registered,
    }


def outside_horizon(day: date, settings: Settings) -> str | None:
    """Why ``day`` cannot be reported, or None: the days are REPORT_MAX_AGE_DAYS ago up to
    today in CRON_TIMEZONE (later days have nothing to count, and 9999-12-31 has no next
    day; older ones would rebuild and mail reports of long ago)."""
    newest = today(settings.timezone)
    oldest = newest - timedelta(days=settings.report_max_age_days)
    if oldest <= day <= newest:
        return None
    return (
        f"must be a day from {oldest} to {newest} ({settings.cron_timezone}): today and up to"
        f" REPORT_MAX_AGE_DAYS={settings.report_max_age_days} days before"
    )


def report_day(settings: Settings, day: date | None) -> date:
    """The day a report is for: the one asked for, else yesterday in CRON_TIMEZONE."""
    return today(settings.timezone) - timedelta(days=1) if day is None else day


def _report_day(ctx: MailContext, day: str | None) -> date:
    try:
        asked = None if day is None else date.fromisoformat(day)
    except ValueError:
        raise PermanentError(f"invalid report date {day!r}") from None
    if asked is not None and (problem := outside_horizon(asked, ctx["settings"])) is not None:
        raise PermanentError(f"report day {day}: {problem}")
    return report_day(ctx["settings"], asked)


async def daily_report(
    ctx: MailContext, *, day: str | None = None, resend: bool = False
) -> dict[str, str]:
    """Count a day's jobs, emails, images and sign-ups (default: yesterday's).

    Writes ``reports/<day>.json`` through storage (DATA_DIR or the bucket) every time, and
    mails it to each of REPORT_RECIPIENTS once per day, or again when asked with ``resend``
    (jobs/report_mail.py).
    """
    the_day = _report_day(ctx, day)
    report = await build_report(ctx, the_day)
    name = f"{the_day.isoformat()}.json"
    data = (json.dumps(report, indent=2) + "\n").encode()
    await _store_report(ctx, name, data)
    await ctx["progress"]("file written", done=3, total=SECTIONS)
    mailed = await mail_report(ctx, report, the_day, resend=resend)
    await ctx["progress"](mailed, done=4, total=SECTIONS)
    return {"path": f"reports/{name}", "date": the_day.isoformat()}


async def _store_report(ctx: MailContext, name: str, data: bytes) -> None:
    """Written to a temporary file (fsynced), then stored whole: a reader sees the old report
    or the new one."""
    storage = ctx["storage"]
    temp = storage.temp_path(REPORTS, suffix=".json")
    try:
        await asyncio.get_running_loop().run_in_executor(ctx["executor"], _write, temp, data)
        await storage.store(REPORTS, name, temp)
    except StorageUnavailableError as exc:
        raise TransientError("file storage unavailable") from exc  # exc names the server
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__  # never the file's path
        raise PermanentError(f"could not write the report: {reason}") from exc
    finally:
        await storage.discard(temp)


def _write(path: Path, data: bytes) -> None:
    with path.open("xb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


class DailyReport(JobInput):
    day: date | None = None  # in CRON_TIMEZONE; the job's default is yesterday
    resend: bool = False  # mail the day's report again, although it was mailed already

    @field_validator("day")
    @classmethod
    def _within_horizon(cls, value: date | None, info: ValidationInfo) -> date | None:
        settings = settings_in(info.context)
        problem = None if value is None or settings is None else outside_horizon(value, settings)
        if problem is not None:
            raise ValueError(problem)
        return value


async def recipients_to_mail(settings: Settings, redis: Redis, job_input: Any) -> list[str]:
    """The recipients a report job queued now would mail, which the API counts against
    RATE_LIMIT_PER_RECIPIENT: all with ``resend``, else those the day's report has not been
    sent to (one it is being sent to right now counts too: it may yet fail)."""
    recipients = list(settings.report_recipients)
    if not isinstance(job_input, DailyReport) or job_input.resend or not recipients:
        return recipients
    day = report_day(settings, job_input.day)
    records = await redis.mget([mailed_key(day, recipient) for recipient in recipients])
    return [r for r, record in zip(recipients, records, strict=True) if record != SENT]


JOB = Job(
    name="daily_report",
    run=daily_report,
    input=DailyReport,
    mails_to=recipients_to_mail,
    cron=Cron(hour=0),
    api=True,
)
