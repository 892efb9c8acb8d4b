"""The daily_report cron job (00:00): yesterday's activity as JSON, emailed when configured."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from jobs.mail import MailContext, send_mail
from service.runtime import (
    REPORTS,
    Cron,
    Job,
    JobInput,
    PermanentError,
    StorageUnavailableError,
    TransientError,
    day_counts,
    job_key,
    today,
)


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


def _report_day(ctx: MailContext, day: str | None) -> date:
    if day is None:
        return today(ctx["settings"].timezone) - timedelta(days=1)
    try:
        return date.fromisoformat(day)
    except ValueError:
        raise PermanentError(f"invalid report date {day!r}") from None


async def _email_report(ctx: MailContext, report: dict[str, Any]) -> str:
    """Mail the report once per job; the progress step it ends with."""
    settings, redis = ctx["settings"], ctx["redis"]
    marker = job_key("sent", ctx["job_id"])
    if not settings.report_recipients:
        return "no recipients to mail"
    if await redis.get(marker):
        return "mailed"

    async def remember_sent() -> None:
        await redis.set(marker, "1", ex=settings.job_result_ttl)

    await send_mail(
        ctx,
        to=", ".join(settings.report_recipients),
        subject=f"Daily report for {report['date']}",
        body=json.dumps(report, indent=2) + "\n",
        on_accepted=remember_sent,
    )
    return "mailed"


async def daily_report(ctx: MailContext, *, day: str | None = None) -> dict[str, str]:
    """Count a day's jobs, emails, images and sign-ups (default: yesterday's).

    Writes ``reports/<day>.json`` through storage (DATA_DIR or the bucket) and mails it to
    REPORT_RECIPIENTS, once per job.
    """
    report_day = _report_day(ctx, day)
    report = await build_report(ctx, report_day)
    name = f"{report_day.isoformat()}.json"
    data = (json.dumps(report, indent=2) + "\n").encode()
    await _store_report(ctx, name, data)
    await ctx["progress"]("file written", done=3, total=SECTIONS)
    await ctx["progress"](await _email_report(ctx, report), done=4, total=SECTIONS)
    return {"path": f"reports/{name}", "date": report_day.isoformat()}


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


JOB = Job(
    name="daily_report",
    run=daily_report,
    input=DailyReport,
    cron=Cron(hour=0),
    api=True,
)
