"""Three worker processes racing for the same cron schedule run each job once."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta
from pathlib import Path

from arq.connections import ArqRedis

from service.records import stats
from settings import Settings
from tests import files
from tests.conftest import queued
from tests.faults.conftest import Spawn
from tests.waiting import wait_until

STARTUP = 30
WORKERS = 3


async def test_three_workers_make_one_daily_report_and_one_cleanup(
    redis: ArqRedis, settings: Settings, spawn: Spawn, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    workers = [await spawn("cron-worker", str(go)) for _ in range(WORKERS)]

    async def all_waiting() -> bool:
        return all(["waiting for go" in await worker.output() for worker in workers])

    await wait_until(all_waiting, within=STARTUP)
    due = time.time() + 1.5  # arq enqueues a cron job up to 1 s early: all three are up by then
    cue = go.with_suffix(".tmp")
    await files.write_bytes(cue, str(due).encode())
    await asyncio.to_thread(cue.replace, go)  # atomically: no worker reads a half-written cue

    async def both_ran() -> bool:
        counters = await stats.day_counts(redis, stats.today(settings.timezone))
        done = counters.get("job:daily_report:success", 0)
        return done >= 1 and counters.get("job:cleanup_old_files:success", 0) >= 1

    await wait_until(both_ran, within=STARTUP)

    async def every_worker_past_the_schedule() -> bool:
        # each worker enqueues the schedule at its first heartbeat within 1 s of `due`, and
        # never again; past due + 2 s, a second run would have been queued already
        return time.time() > due + 2 and await queued(redis, settings) == []

    await wait_until(every_worker_past_the_schedule, within=STARTUP)
    counters = await stats.day_counts(redis, stats.today(settings.timezone))
    assert counters["job:daily_report:success"] == 1
    assert counters["job:cleanup_old_files:success"] == 1
    assert all(worker.running() for worker in workers)
    yesterday = datetime.now(settings.timezone).date() - timedelta(days=1)
    [report] = await files.names_in(settings.reports_dir)
    assert report == f"{yesterday}.json"
    assert json.loads(await files.read_text(settings.reports_dir / report))["date"] == str(
        yesterday
    )
    results = await redis.keys("arq:result:cron:*")
    assert sorted(key.decode().rsplit(":", 1)[0] for key in results) == [
        "arq:result:cron:cleanup_old_files",
        "arq:result:cron:daily_report",
    ]
