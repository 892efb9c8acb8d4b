"""Cron steering with several real worker processes: a missed run caught up once by three
workers starting together, and a paused schedule skipped by every worker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from arq.connections import ArqRedis

from service.records import schedules, stats
from settings import Settings
from tests import files
from tests.conftest import queued
from tests.faults.conftest import Spawn
from tests.faults.processes import Process
from tests.waiting import wait_until

STARTUP = 30
WORKERS = 3
SCHEDULES = ["cron:cleanup_old_files", "cron:daily_report"]


async def _cue(workers: list[Process], go: Path, at: float) -> None:
    """Once every process waits, write ``at`` to the go file, atomically."""

    async def all_waiting() -> bool:
        return all(["waiting for go" in await worker.output() for worker in workers])

    await wait_until(all_waiting, within=STARTUP)
    cue = go.with_suffix(".tmp")
    await files.write_bytes(cue, str(at).encode())
    await asyncio.to_thread(cue.replace, go)


async def _runs(redis: ArqRedis) -> dict[str, list[str]]:
    found = await schedules.recent_runs(redis, SCHEDULES)
    return {name: [run.outcome for run in runs] for name, runs in found.items()}


async def test_three_workers_starting_after_a_missed_run_catch_it_up_once(
    redis: ArqRedis, settings: Settings, spawn: Spawn, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    workers = [await spawn("catch-up-worker", str(go), cron_catch_up=3600) for _ in range(WORKERS)]
    await _cue(workers, go, time.time() - 5)  # both schedules were due 5 s ago, none was up

    async def both_ran() -> bool:
        # a run is listed as its code ends, a moment before arq takes it off the queue
        ran = await _runs(redis) == {name: ["success"] for name in SCHEDULES}
        return ran and await queued(redis, settings) == []

    await wait_until(both_ran, within=STARTUP)

    async def every_worker_caught_up() -> bool:
        outputs = [await worker.output() for worker in workers]
        return all("cron catch-up done" in output for output in outputs)

    await wait_until(every_worker_caught_up, within=STARTUP)
    assert await queued(redis, settings) == []
    counters = await stats.day_counts(redis, stats.today(settings.timezone))
    assert counters["job:daily_report:success"] == 1
    assert counters["job:cleanup_old_files:success"] == 1
    assert await _runs(redis) == {name: ["success"] for name in SCHEDULES}
    catching = [w for w in workers if "missed its run" in await w.output()]
    assert len(catching) >= 1
    assert all(worker.running() for worker in workers)


async def test_a_paused_schedule_is_skipped_by_every_worker(
    redis: ArqRedis, settings: Settings, spawn: Spawn, tmp_path: Path
) -> None:
    await schedules.pause(redis, "cron:daily_report", int(time.time() * 1000))
    go = tmp_path / "go"
    workers = [await spawn("cron-worker", str(go)) for _ in range(2)]
    due = time.time() + 1.5  # arq queues a cron run up to 1 s early: both are up by then
    await _cue(workers, go, due)

    async def both_done() -> bool:
        runs = await _runs(redis)
        return runs == {"cron:cleanup_old_files": ["success"], "cron:daily_report": ["skipped"]}

    await wait_until(both_done, within=STARTUP)

    async def past_the_schedule() -> bool:
        return time.time() > due + 2 and await queued(redis, settings) == []

    await wait_until(past_the_schedule, within=STARTUP)
    counters = await stats.day_counts(redis, stats.today(settings.timezone))
    assert "job:daily_report:success" not in counters
    assert counters["job:cleanup_old_files:success"] == 1
    assert await files.names_in(settings.reports_dir) == []
