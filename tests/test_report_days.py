"""POST /reports/daily takes days from REPORT_MAX_AGE_DAYS ago up to today, in CRON_TIMEZONE."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.queue.enqueue import enqueue
from settings import Settings
from tests import files
from tests.conftest import (
    AUTH_HEADERS,
    ClientFactory,
    RunWorker,
    SmtpRecorder,
    assert_refused,
    queued,
    status_of,
)
from web import create_app


def today_in(settings: Settings) -> date:
    return datetime.now(settings.timezone).date()


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01", "1970-01-01"])
async def test_a_day_far_outside_the_horizon_is_400_and_queues_nothing(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, day: str
) -> None:
    response = await client.post("/reports/daily", json={"day": day})
    await assert_refused(response, 400, "day:", redis, settings)
    assert "REPORT_MAX_AGE_DAYS" in (await response.json())["error"]


async def test_post_jobs_applies_the_same_horizon(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    body = {"function": "daily_report", "kwargs": {"day": "9999-12-31"}}
    response = await client.post("/jobs", json=body)
    await assert_refused(response, 400, "kwargs.day:", redis, settings)


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC"])
async def test_the_horizon_runs_from_max_age_days_ago_to_today_in_the_cron_zone(
    aiohttp_client: ClientFactory, redis: ArqRedis, settings: Settings, zone: str
) -> None:
    """UTC+14 and UTC-11: "today" is the report's day as the cron counts it, not the UTC one."""
    await asyncio.to_thread(ZoneInfo, zone)  # read once off the loop, as settings.py does at start
    zoned = settings.model_copy(
        update={"cron_timezone": zone, "report_max_age_days": 7, "rate_limit_per_token": ""}
    )
    client = await aiohttp_client(create_app(zoned), headers=AUTH_HEADERS)
    today = today_in(zoned)
    for day in (today, today - timedelta(days=7)):
        response = await client.post("/reports/daily", json={"day": day.isoformat()})
        assert response.status == 202, await response.text()
    accepted = await queued(redis, settings)
    for day in (today + timedelta(days=1), today - timedelta(days=8)):
        response = await client.post("/reports/daily", json={"day": day.isoformat()})
        assert response.status == 400, await response.text()
        error = (await response.json())["error"]
        assert (today - timedelta(days=7)).isoformat() in error
        assert today.isoformat() in error
        assert zone in error
    assert await queued(redis, settings) == accepted, "nothing queued for the refused days"


def test_the_default_horizon_is_400_days() -> None:
    assert Settings().report_max_age_days == 400


async def test_a_job_queued_with_an_impossible_day_fails_for_good_and_writes_nothing(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    """Queued by other code, past the API's check: the job checks the day again."""
    mailing = settings.model_copy(update={"report_recipients": ("ops@example.com",)})
    task_id = await enqueue(redis, "daily_report", {"day": "9999-12-31"})
    await run_worker(mailing)
    failed = await status_of(client, task_id)
    assert failed["status"] == "FAILURE"
    assert failed["attempts"] == 1
    assert "9999-12-31" in failed["error"]
    assert "REPORT_MAX_AGE_DAYS" in failed["error"]
    assert not await files.exists(settings.reports_dir / "9999-12-31.json")
    assert smtp_server.messages == []
