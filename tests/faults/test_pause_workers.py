"""A paused queue with real worker processes: the running email finishes, nothing new starts,
a restarted worker stays paused, cron runs wait, and everything runs once resumed."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.records import stats
from service.store import keys
from settings import Settings
from tests import files
from tests.conftest import SmtpRecorder, accepted_task, queued, status_of
from tests.faults.conftest import Spawn
from tests.waiting import wait_until

STARTUP = 30  # seconds a worker process may take to import and connect on a busy machine
# How long a paused worker is watched taking nothing: well over its idle read (0.5 s), so it
# has looked at the queue several times.
STILL_WAITING = 2.0
EMAIL = {"to": "ann@example.com", "body": "hello"}
# The held email must outlast the pause checks: the fault settings' 2 s SMTP timeout would
# retry it mid-test.
HOLDS = {"smtp_timeout": 30, "email_job_timeout": 90}


async def _email(client: TestClient[Any, Any], subject: str) -> str:
    return await accepted_task(client, "/send-email", {**EMAIL, "subject": subject})


async def _state(client: TestClient[Any, Any], task_id: str) -> str:
    return str((await status_of(client, task_id))["status"])


async def _alive_workers(client: TestClient[Any, Any]) -> int:
    return int((await (await client.get("/health")).json())["worker"]["count"])


async def _stays_pending(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, task_id: str
) -> None:
    """The worker woke for ``task_id`` (it popped the wake token its enqueue pushed) and
    still has not started it after STILL_WAITING seconds."""

    async def woken() -> bool:
        return not await redis.exists(keys.wake(settings.queue_name))

    await wait_until(woken, within=STARTUP)
    deadline = time.monotonic() + STILL_WAITING
    while time.monotonic() < deadline:
        assert await _state(client, task_id) == "PENDING"
        await asyncio.sleep(0.1)


async def test_pause_lets_the_running_job_finish_holds_the_rest_across_a_restart_then_resume(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    smtp_server: SmtpRecorder,
    spawn: Spawn,
) -> None:
    worker = await spawn("worker", **HOLDS)
    running = await _email(client, "Running at the pause")
    smtp_server.hold = threading.Event()

    async def mid_email() -> bool:
        return smtp_server.data_arrived.is_set()

    await wait_until(mid_email, within=STARTUP)

    assert (await client.post("/queue/pause")).status == 200
    waiting = await _email(client, "Queued while paused")
    await _stays_pending(client, redis, settings, waiting)
    drain = await client.post("/queue/drain", params={"timeout": "0"})
    assert (drain.status, (await drain.json())["running"]) == (202, 1)

    smtp_server.hold.set()
    drained = await client.post("/queue/drain", params={"timeout": "20"})
    assert drained.status == 200, "the running email finished while paused"
    assert await _state(client, running) == "SUCCESS"
    assert [m.message["Subject"] for m in smtp_server.messages] == ["Running at the pause"]

    worker.signal(signal.SIGTERM)
    assert await worker.wait(STARTUP) == 0
    await spawn("worker", **HOLDS)

    async def restarted() -> bool:
        return await _alive_workers(client) == 1

    await wait_until(restarted, within=STARTUP)
    another = await _email(client, "Queued after the restart")
    await _stays_pending(client, redis, settings, another)
    assert await _state(client, waiting) == "PENDING", "the new worker obeys the pause too"
    assert (await (await client.get("/health")).json())["paused"] is True

    assert (await client.post("/queue/resume")).status == 200

    async def both_sent() -> bool:
        return {await _state(client, waiting), await _state(client, another)} == {"SUCCESS"}

    await wait_until(both_sent, within=STARTUP)
    subjects = sorted(m.message["Subject"] for m in smtp_server.messages)
    assert subjects == ["Queued after the restart", "Queued while paused", "Running at the pause"]


async def test_a_cron_run_due_while_paused_waits_for_the_resume_and_runs_once(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, spawn: Spawn, tmp_path: Path
) -> None:
    assert (await client.post("/queue/pause")).status == 200
    go = tmp_path / "go"
    workers = [await spawn("cron-worker", str(go)) for _ in range(2)]

    async def all_waiting() -> bool:
        return all(["waiting for go" in await worker.output() for worker in workers])

    await wait_until(all_waiting, within=STARTUP)
    due = time.time() + 1.5  # arq queues a cron run up to 1 s early: both are up by then
    cue = go.with_suffix(".tmp")
    await files.write_bytes(cue, str(due).encode())
    await asyncio.to_thread(cue.replace, go)

    async def both_queued_and_due() -> bool:
        runs = [job for job in await queued(redis, settings) if job.startswith("cron:")]
        return len(runs) == 2 and time.time() > due + 2

    await wait_until(both_queued_and_due, within=STARTUP)
    counters = await stats.day_counts(redis, stats.today(settings.timezone))
    assert not any(name.startswith("job:") for name in counters), "nothing ran while paused"

    assert (await client.post("/queue/resume")).status == 200

    async def both_ran() -> bool:
        done = await stats.day_counts(redis, stats.today(settings.timezone))
        return done.get("job:daily_report:success", 0) + done.get(
            "job:cleanup_old_files:success", 0
        ) == 2 and not await queued(redis, settings)

    await wait_until(both_ran, within=STARTUP)
    counters = await stats.day_counts(redis, stats.today(settings.timezone))
    assert counters["job:daily_report:success"] == 1
    assert counters["job:cleanup_old_files:success"] == 1
