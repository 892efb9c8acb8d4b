"""The two cron jobs: their schedule, their effects, and one run per schedule across workers."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from arq.cron import CronJob

from service.store.storage.local import delete_older_than
from service.worker.options import build_worker_settings
from service.worker.resources import open_resources
from settings import Settings
from tests import files
from tests.conftest import RunWorker, SmtpRecorder, status_of

DAY = 86_400


def cron_jobs(settings: Settings) -> dict[str, CronJob]:
    worker_settings = build_worker_settings(settings)
    return {job.name: job for job in worker_settings.__dict__["cron_jobs"]}


def test_crons_are_registered_at_midnight_and_two_in_the_configured_zone() -> None:
    settings = Settings(cron_timezone="Europe/Paris")
    jobs = cron_jobs(settings)
    assert set(jobs) == {"cron:daily_report", "cron:cleanup_old_files"}
    report, cleanup = jobs["cron:daily_report"], jobs["cron:cleanup_old_files"]
    assert (report.hour, report.minute, report.second) == (0, 0, 0)
    assert (cleanup.hour, cleanup.minute, cleanup.second) == (2, 0, 0)
    assert build_worker_settings(settings).__dict__["timezone"] == ZoneInfo("Europe/Paris")

    paris = ZoneInfo("Europe/Paris")
    report.calculate_next(datetime(2026, 11, 24, 23, 59, 30, tzinfo=paris))
    assert report.next_run is not None
    # arq fires a few hundred ms past the second on purpose; the minute is what matters
    assert report.next_run.replace(microsecond=0) == datetime(2026, 11, 25, 0, 0, tzinfo=paris)
    cleanup.calculate_next(datetime(2026, 11, 25, 0, 30, tzinfo=paris))
    assert cleanup.next_run is not None
    assert cleanup.next_run.replace(microsecond=0) == datetime(2026, 11, 25, 2, 0, tzinfo=paris)


def _age(path: Path, days: float) -> None:
    when = datetime.now().timestamp() - days * DAY
    os.utime(path, (when, when), follow_symlinks=False)


async def test_cleanup_cron_fires_and_deletes_only_old_regular_files(
    settings: Settings, redis: ArqRedis, run_worker: RunWorker, tmp_path: Path
) -> None:
    uploads = settings.uploads_dir
    outside = tmp_path / "outside.txt"
    nested = uploads / "nested"

    def plant_files() -> None:
        uploads.mkdir(parents=True)
        old, fresh = uploads / "old.jpg", uploads / "fresh.jpg"
        old.write_bytes(b"x")
        fresh.write_bytes(b"y")
        _age(old, 31)
        _age(fresh, 29)
        outside.write_text("keep me")
        _age(outside, 90)
        link = uploads / "link.jpg"
        link.symlink_to(outside)
        _age(link, 90)
        nested.mkdir()
        (nested / "deep.jpg").write_bytes(b"z")
        _age(nested / "deep.jpg", 90)

    await asyncio.to_thread(plant_files)

    cleanup = cron_jobs(settings)["cron:cleanup_old_files"]
    worker = await run_worker(cron_jobs=[_due_now(cleanup, settings)])

    assert worker.jobs_complete == 1
    assert await files.names_in(uploads) == ["fresh.jpg", "link.jpg", "nested"]
    assert await files.read_text(outside) == "keep me"
    assert await files.exists(nested / "deep.jpg")
    job_id = (await redis.keys("arq:result:cron:cleanup_old_files:*"))[0].decode().split(":", 2)[2]
    result = await redis.get(f"arq:result:{job_id}")
    assert result is not None
    assert json.loads(result)["r"] == {"deleted": 1}


def test_cleanup_tolerates_a_missing_folder(tmp_path: Path) -> None:
    assert delete_older_than(tmp_path / "absent", cutoff=datetime.now().timestamp()) == 0


def _due_now(job: CronJob, settings: Settings) -> CronJob:
    """The same cron job, due at the worker's next poll instead of at 00:00 or 02:00."""
    job.next_run = datetime.now(settings.timezone) - timedelta(seconds=1)
    return job


async def test_two_workers_run_a_due_cron_once(
    settings: Settings, redis: ArqRedis, run_worker: RunWorker
) -> None:
    due = datetime.now(settings.timezone) - timedelta(seconds=1)
    schedules = [cron_jobs(settings)["cron:daily_report"] for _ in range(2)]
    for schedule in schedules:
        schedule.next_run = due
    # Both start up, then meet here: their first loop iterations, which queue the due run and
    # claim it, race each other instead of one worker finishing before the other begins.
    both_up = asyncio.Barrier(2)
    on_startup = open_resources(settings)  # the service's own start-up, then the meeting

    async def start_together(ctx: dict[str, Any]) -> None:
        await on_startup(ctx)
        async with asyncio.timeout(10):
            await both_up.wait()

    first, second = await asyncio.gather(
        *(run_worker(cron_jobs=[schedule], on_startup=start_together) for schedule in schedules)
    )

    assert sorted([first.jobs_complete, second.jobs_complete]) == [0, 1]
    assert first.jobs_failed == second.jobs_failed == 0
    yesterday = datetime.now(settings.timezone).date() - timedelta(days=1)
    assert await files.names_in(settings.reports_dir) == [f"{yesterday.isoformat()}.json"]


async def test_daily_report_counts_the_days_activity_and_mails_it(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    email = {"to": "ann@example.com", "subject": "Hi", "body": "x"}
    assert (await client.post("/send-email", json=email)).status == 202
    smtp_server.replies = ["451 later"]  # one retry, counted as such
    assert (await client.post("/register", json={"name": "Bo", "email": "bo@example.com"})).status
    await run_worker()
    smtp_server.messages.clear()

    today = datetime.now(settings.timezone).date()
    reporting = settings.model_copy(update={"report_recipients": ("ops@example.com",)})
    response = await client.post("/reports/daily", json={"day": today.isoformat()})
    assert response.status == 202
    task_id = (await response.json())["task_id"]
    await run_worker(reporting)

    done = await status_of(client, task_id)
    assert done["status"] == "SUCCESS"
    assert done["result"] == {"path": f"reports/{today}.json", "date": today.isoformat()}
    report = json.loads(await files.read_text(settings.reports_dir / f"{today}.json"))
    assert report["date"] == today.isoformat()
    assert report["emails_sent"] == 2
    assert report["users_registered"] == 1
    assert report["images_processed"] == 0
    jobs = report["jobs"]
    assert jobs["send_email"]["success"] == jobs["send_welcome_email"]["success"] == 1
    retries = [counts.get("retry", 0) for counts in jobs.values()]
    assert sum(retries) == 1
    assert "failure" not in jobs["send_email"]
    [mail] = smtp_server.messages
    assert mail.recipients == ["ops@example.com"]
    assert mail.message["Subject"] == f"Daily report for {today}"
    assert json.loads(mail.message.get_content())["users_registered"] == 1
    assert not [name for name in await files.names_in(settings.reports_dir) if name[0] == "."]


async def test_report_without_a_day_covers_yesterday(
    client: TestClient[Any, Any], settings: Settings, run_worker: RunWorker
) -> None:
    response = await client.post("/reports/daily")
    assert response.status == 202
    await run_worker()
    yesterday = datetime.now(settings.timezone).date() - timedelta(days=1)
    report = json.loads(await files.read_text(settings.reports_dir / f"{yesterday}.json"))
    assert report == {**report, "date": str(yesterday), "emails_sent": 0, "jobs": {}}


@pytest.mark.parametrize(
    "payload", [{"day": "yesterday"}, {"day": 20261124}, {"day": "2026-13-01"}, {"other": 1}]
)
async def test_bad_report_requests_are_400(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, payload: dict[str, Any]
) -> None:
    response = await client.post("/reports/daily", json=payload)
    assert response.status == 400
    assert await redis.zcard(settings.queue_name) == 0


@pytest.mark.parametrize("body", [b"\r\n", b" ", b"\t\n "])
async def test_a_report_body_of_only_whitespace_is_not_json_and_is_400(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, body: bytes
) -> None:
    # no body at all means "yesterday"; whitespace is a body, and not JSON (schemathesis)
    headers = {"Content-Type": "application/json"}
    response = await client.post("/reports/daily", data=body, headers=headers)
    assert response.status == 400
    assert await redis.zcard(settings.queue_name) == 0


def test_the_entry_point_class_carries_the_schedules() -> None:
    import service

    try:
        worker_settings = service.WorkerSettings
    finally:
        asyncio.set_event_loop_policy(None)  # building it installs uvloop: keep the tests' loop
    schedule = {job.name: (job.hour, job.minute) for job in worker_settings.cron_jobs}
    assert schedule == {
        "cron:daily_report": (0, 0),
        "cron:cleanup_old_files": (2, 0),
    }
    # arq reads only the class's own __dict__, so the settings must live there
    assert {"functions", "cron_jobs", "job_serializer", "on_startup"} <= set(vars(worker_settings))
