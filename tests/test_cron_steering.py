"""Cron schedules an operator can steer: next runs across a change of clocks, pause and resume
per schedule, the latest runs, and missed runs caught up (with a fixed clock).

Real Redis and real burst workers; several worker processes racing for a missed run, and a
paused schedule obeyed by several processes, are in tests/faults/test_cron_steering_workers.py.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from jobs.registry import REGISTRY
from service.dashboard.crons import next_runs
from service.engine.arq_api import CronJob, result_key_prefix
from service.queue.enqueue import enqueue_job
from service.records import schedules, stats
from service.store import keys
from service.worker.options import worker_options
from service.worker.schedules import catch_up, run_id
from settings import Settings
from tests.conftest import ClientFactory, RunWorker, queued
from tests.dashboard_client import Dashboard
from web import create_app

BERLIN = ZoneInfo("Europe/Berlin")
REPORT, CLEANUP = REGISTRY["daily_report"], REGISTRY["cleanup_old_files"]


def _arq_times(settings: Settings, name: str, start: datetime, count: int) -> list[float]:
    """The instants arq's own CronJob computes for the schedule, as the worker builds it."""
    [cron_job] = [c for c in worker_options(settings)["cron_jobs"] if c.name == name]
    assert isinstance(cron_job, CronJob)
    found, moment = [], start
    for _ in range(count):
        cron_job.calculate_next(moment)
        assert cron_job.next_run is not None
        moment = cron_job.next_run
        found.append(moment.timestamp())
    return found


def _local(times: list[datetime]) -> list[str]:
    return [moment.strftime("%m-%d %H:%M %z") for moment in times]


def _hours_between(first: datetime, then: datetime) -> float:
    """Real hours (same-zone datetime subtraction counts wall-clock hours)."""
    return (then.timestamp() - first.timestamp()) / 3600


def test_next_five_runs_across_the_spring_change_in_berlin(settings: Settings) -> None:
    now = datetime(2026, 3, 27, 12, 0, tzinfo=BERLIN)  # clocks go 02:00 -> 03:00 on the 29th
    report = next_runs(REPORT, now)
    assert _local(report) == [
        "03-28 00:00 +0100",
        "03-29 00:00 +0100",
        "03-30 00:00 +0200",  # midnight stays midnight: one hour earlier in UTC
        "03-31 00:00 +0200",
        "04-01 00:00 +0200",
    ]
    assert _hours_between(report[1], report[2]) == 23
    cleanup = next_runs(CLEANUP, now)
    # 02:00 does not exist on the 29th: arq runs it at that instant, which is 03:00 summer time
    assert _local(cleanup)[:3] == ["03-28 02:00 +0100", "03-29 03:00 +0200", "03-30 02:00 +0200"]
    berlin = settings.model_copy(update={"cron_timezone": "Europe/Berlin"})
    assert [t.timestamp() for t in cleanup] == pytest.approx(
        _arq_times(berlin, "cron:cleanup_old_files", now, 5)
    ), "the times shown are the times arq's cron runs"


def test_next_five_runs_across_the_autumn_change_in_berlin(settings: Settings) -> None:
    now = datetime(2026, 10, 23, 12, 0, tzinfo=BERLIN)  # clocks go 03:00 -> 02:00 on the 25th
    cleanup = next_runs(CLEANUP, now)
    # 02:00 happens twice on the 25th: it runs once, at the first
    assert _local(cleanup)[:3] == ["10-24 02:00 +0200", "10-25 02:00 +0200", "10-26 02:00 +0100"]
    assert _hours_between(cleanup[1], cleanup[2]) == 25
    report = next_runs(REPORT, now)
    assert _local(report)[1:3] == ["10-25 00:00 +0200", "10-26 00:00 +0100"]
    berlin = settings.model_copy(update={"cron_timezone": "Europe/Berlin"})
    assert [t.timestamp() for t in cleanup] == pytest.approx(
        _arq_times(berlin, "cron:cleanup_old_files", now, 5)
    )


async def _scheduled_run(redis: ArqRedis, name: str, due: datetime) -> str:
    """Queue the run of schedule ``name`` due at ``due`` exactly as arq's cron queues it."""
    job_id = run_id(name, due)
    assert await enqueue_job(redis, name, job_id, {})
    return job_id


async def test_a_paused_schedule_is_skipped_by_the_worker_and_runs_again_once_resumed(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, run_worker: RunWorker
) -> None:
    response = await client.post("/crons/cron:daily_report/pause")
    assert response.status == 200
    body = await response.json()
    assert (body["name"], body["paused"]) == ("cron:daily_report", True)
    assert len(body["next_runs"]) == 5

    due = datetime.now(UTC)
    skipped = await _scheduled_run(redis, "cron:daily_report", due)
    await run_worker()
    counters = await stats.day_counts(redis, stats.today(settings.timezone))
    assert "job:daily_report:success" not in counters, "a paused schedule does not run"
    assert not await redis.exists(keys.job_meta(skipped)), "the job itself never started"

    assert (await client.post("/crons/cron:daily_report/resume")).status == 200
    ran = await _scheduled_run(redis, "cron:daily_report", due + timedelta(days=1))
    await run_worker()
    counters = await stats.day_counts(redis, stats.today(settings.timezone))
    assert counters["job:daily_report:success"] == 1

    listed = await (await client.get("/crons")).json()
    assert listed["timezone"] == settings.cron_timezone
    report = next(c for c in listed["crons"] if c["name"] == "cron:daily_report")
    assert report["paused"] is False
    assert [(r["job_id"], r["outcome"]) for r in report["last_runs"]] == [
        (ran, "success"),
        (skipped, "skipped"),
    ]
    assert report["last_runs"][0]["duration_ms"] >= 0
    assert report["last_runs"][0]["finished_at"] >= report["last_runs"][0]["started_at"]


async def test_the_run_list_keeps_the_latest_twenty(
    client: TestClient[Any, Any], redis: ArqRedis, run_worker: RunWorker
) -> None:
    start = datetime.now(UTC)
    ids = [
        await _scheduled_run(redis, "cron:cleanup_old_files", start + timedelta(days=n))
        for n in range(schedules.RUNS_KEPT + 3)
    ]
    await run_worker(max_jobs=1)  # one at a time: they end, and are listed, in queue order
    listed = await (await client.get("/crons")).json()
    cleanup = next(c for c in listed["crons"] if c["name"] == "cron:cleanup_old_files")
    assert len(cleanup["last_runs"]) == schedules.RUNS_KEPT
    assert {r["outcome"] for r in cleanup["last_runs"]} == {"success"}
    assert set(ids) - {r["job_id"] for r in cleanup["last_runs"]} == set(ids[:3])
    assert await redis.llen(keys.schedule_runs("cron:cleanup_old_files")) == schedules.RUNS_KEPT  # type: ignore[misc]


async def test_cron_routes_refuse_unknown_schedules_and_missing_tokens(
    client: TestClient[Any, Any], aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    for path in ("/crons/cron:nope/pause", "/crons/daily_report/pause", "/crons/cron:nope/resume"):
        response = await client.post(path)
        assert response.status == 404
        assert "no cron schedule" in (await response.json())["error"]
    anonymous = await aiohttp_client(create_app(settings))
    assert (await anonymous.post("/crons/cron:daily_report/pause")).status == 401
    assert (await anonymous.get("/crons")).status == 401
    assert await schedules.paused(redis) == {}


def _at(hour: int, minute: int) -> datetime:
    return datetime(2026, 12, 3, hour, minute, 30, tzinfo=UTC)


async def test_a_missed_run_is_caught_up_once_within_the_window_with_arqs_run_id(
    redis: ArqRedis, settings: Settings
) -> None:
    catching = settings.model_copy(update={"cron_catch_up": 3600})
    first = await catch_up(redis, catching, REGISTRY, _at(0, 10))  # report due 00:00, missed
    expected = _arq_times(catching, "cron:daily_report", _at(0, 0) - timedelta(minutes=1), 1)
    assert first == [f"cron:daily_report:{round(expected[0] * 1000)}"]
    assert await queued(redis, settings) == first
    assert await catch_up(redis, catching, REGISTRY, _at(0, 20)) == [], "a second worker: none"
    assert await catch_up(redis, catching, REGISTRY, _at(1, 10)) == [], "70 min: out of window"
    [cleanup] = await catch_up(redis, catching, REGISTRY, _at(2, 59))
    assert cleanup.startswith("cron:cleanup_old_files:")
    off = settings.model_copy(update={"cron_catch_up": 0})
    await redis.flushdb()
    assert await catch_up(redis, off, REGISTRY, _at(0, 10)) == [], "0: never, as arq"


async def test_a_run_a_worker_already_made_is_not_caught_up(
    redis: ArqRedis, settings: Settings, run_worker: RunWorker
) -> None:
    catching = settings.model_copy(update={"cron_catch_up": 3600})
    due = datetime.fromtimestamp(
        _arq_times(catching, "cron:daily_report", _at(0, 0) - timedelta(minutes=1), 1)[0], UTC
    )
    ran = await _scheduled_run(redis, "cron:daily_report", due)  # as arq queued it at 00:00
    await run_worker(catching)
    await redis.delete(result_key_prefix + ran)  # even without its result (keep_result=0)
    assert await catch_up(redis, catching, REGISTRY, _at(0, 10)) == []
    assert await queued(redis, settings) == []


async def test_dashboard_pause_and_resume_a_schedule_with_csrf(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    board = Dashboard(await aiohttp_client(create_app(settings)))
    assert (await board.sign_in()).status == 303
    page = await board.page("/dashboard")
    assert 'action="/dashboard/crons/cron:daily_report/pause"' in page
    assert (await board.post("/dashboard/crons/cron:daily_report/pause", csrf=False)).status == 403
    assert await schedules.paused(redis) == {}
    assert (await board.post("/dashboard/crons/cron:nope/pause")).status == 404

    response = await board.post("/dashboard/crons/cron:daily_report/pause")
    assert (response.status, response.headers["Location"]) == (303, "/dashboard#crons")
    page = await board.page("/dashboard")
    row = page.split('id="cron-daily_report"')[1].split("</tr>")[0]
    assert "badge-paused" in row
    assert "skipped while paused" in row
    assert 'action="/dashboard/crons/cron:daily_report/resume"' in row
    assert list(await schedules.paused(redis)) == ["cron:daily_report"]

    assert (await board.post("/dashboard/crons/cron:daily_report/resume")).status == 303
    assert await schedules.paused(redis) == {}
    page = await board.page("/dashboard")
    assert "badge-paused" not in page


async def test_the_overview_lists_a_schedules_next_five_runs_and_its_last_runs(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis, run_worker: RunWorker
) -> None:
    berlin = settings.model_copy(update={"cron_timezone": "Europe/Berlin"})
    ran = await _scheduled_run(redis, "cron:cleanup_old_files", datetime.now(UTC))
    await run_worker(berlin)
    await schedules.pause(redis, "cron:cleanup_old_files", round(time.time() * 1000))
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    skipped = await _scheduled_run(redis, "cron:cleanup_old_files", tomorrow)
    await run_worker(berlin)

    board = Dashboard(await aiohttp_client(create_app(berlin)))
    assert (await board.sign_in()).status == 303
    page = await board.page("/dashboard")
    detail = page.split('id="cron-cleanup_old_files"')[1].split("</details>")[0]
    assert "next 5 runs · last 2 runs" in detail
    # in CRON_TIMEZONE, with its zone's name for the day (CET, or CEST in summer)
    assert len(re.findall(r'<li class="time">\w{3} [\d-]{10} 02:00 CES?T</li>', detail)) == 5
    rows = detail.split('<table class="runs">')[1].split("<tbody>")[1].split("<tr>")[1:]
    assert len(rows) == 2, rows  # newest first
    assert "badge-skipped" in rows[0]
    assert skipped not in rows[0], "a skipped run never ran: no job page to link"
    assert '<td class="time">—</td>' in rows[0]
    assert "badge-success" in rows[1]
    assert f'href="/dashboard/jobs/{ran}"' in rows[1]
    assert re.search(r'<td class="time">\d+(\.\d)? m?s</td>', rows[1]), rows[1]
