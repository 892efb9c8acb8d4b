"""A worker process killed (SIGKILL) or stopped (SIGTERM) mid-email: the email goes out once."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix

from jobs.registry import REGISTRY
from service.engine import finish
from service.records import attempt_scripts
from service.store.scripts import chained
from service.worker.lease import lease_seconds
from settings import Settings
from tests.conftest import SmtpRecorder, accepted_task, queued, status_of
from tests.faults.conftest import Spawn
from tests.faults.processes import RedisServer
from tests.faults.redis_relay import HoldingRelay
from tests.waiting import wait_until

EMAIL = {"to": "ann@example.com", "subject": "Exactly once", "body": "hello"}
STARTUP = 30  # seconds a worker process may take to import and connect on a busy machine


async def _post_email(client: TestClient[Any, Any], subject: str = "Exactly once") -> str:
    return await accepted_task(client, "/send-email", {**EMAIL, "subject": subject})


async def _state(client: TestClient[Any, Any], task_id: str) -> str:
    return str((await status_of(client, task_id))["status"])


async def _hold_first_data(smtp_server: SmtpRecorder) -> threading.Event:
    """Hold the reply to the next DATA; the sending worker is then stuck mid-email."""
    smtp_server.hold = threading.Event()

    async def data_arrived() -> bool:
        return smtp_server.data_arrived.is_set()

    await wait_until(data_arrived, within=STARTUP)
    return smtp_server.hold


async def _dropped_by_server(smtp_server: SmtpRecorder) -> None:
    """aiosmtpd cancels a session's handler once it sees the client gone."""

    async def no_session_waiting() -> bool:
        return smtp_server.waiting == 0

    await wait_until(no_session_waiting, within=10)


async def test_sigkill_mid_email_is_rerun_within_its_bound_and_sent_once(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    smtp_server: SmtpRecorder,
    spawn: Spawn,
) -> None:
    first = await spawn("worker")
    task_id = await _post_email(client)
    release = await _hold_first_data(smtp_server)
    lock_ttl_ms = await redis.pttl(in_progress_key_prefix + task_id)
    bound = lease_seconds(REGISTRY["send_email"], settings)
    assert 0 < lock_ttl_ms <= bound * 1000, "the lock follows the email's timeout, not 310 s"

    first.signal(signal.SIGKILL)
    await first.wait(10)
    killed_at = time.monotonic()
    await _dropped_by_server(smtp_server)
    release.set()
    assert smtp_server.messages == []
    assert await queued(redis, settings) == [task_id], "a killed worker's job stays queued"

    await spawn("worker")

    async def sent() -> bool:
        return await _state(client, task_id) == "SUCCESS"

    await wait_until(sent, within=bound + STARTUP)
    rerun_after = time.monotonic() - killed_at
    done = await status_of(client, task_id)
    assert done["attempts"] == 2
    [mail] = smtp_server.messages
    assert mail.message["Subject"] == "Exactly once"
    assert done["result"]["message_id"] == mail.message["Message-ID"]
    # arq alone would hold the job for JOB_TIMEOUT + 10 = 310 s
    assert rerun_after < settings.job_timeout / 4


async def test_sigterm_lets_the_running_email_finish_and_takes_no_new_job(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    smtp_server: SmtpRecorder,
    spawn: Spawn,
) -> None:
    worker = await spawn("worker")
    running = await _post_email(client)
    release = await _hold_first_data(smtp_server)

    worker.signal(signal.SIGTERM)

    async def stopped_taking_jobs() -> bool:
        return "Setting allow_pick_jobs to `False`" in await worker.output()

    await wait_until(stopped_taking_jobs, within=10)

    async def no_read_in_flight() -> bool:
        # a queue read already waiting for work (service.engine.wakeup, up to 0.5 s) when SIGTERM
        # came may still start what it returns; after it, the worker reads no more
        return not any(c.get("cmd") == "blpop" for c in await redis.client_list())

    await wait_until(no_read_in_flight, within=10)
    waiting = await _post_email(client, "Sent after SIGTERM")
    assert worker.running(), "the worker waits for its running job (grace 5 s)"
    release.set()
    assert await worker.wait(settings.worker_shutdown_grace + 10) == 0

    done = await status_of(client, running)
    assert done["status"] == "SUCCESS"
    assert done["attempts"] == 1
    assert [m.message["Subject"] for m in smtp_server.messages] == ["Exactly once"]
    assert await _state(client, waiting) == "PENDING"
    assert await queued(redis, settings) == [waiting]


async def test_sigterm_cuts_a_job_past_the_grace_and_requeues_it(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    smtp_server: SmtpRecorder,
    spawn: Spawn,
) -> None:
    worker = await spawn("worker", worker_shutdown_grace=1)
    task_id = await _post_email(client)
    release = await _hold_first_data(smtp_server)

    worker.signal(signal.SIGTERM)
    assert await worker.wait(15) == 0
    await _dropped_by_server(smtp_server)
    release.set()

    cut = await status_of(client, task_id)
    assert cut["status"] == "RETRY", "a cut job is queued again, not failed"
    assert cut["attempts"] == 1
    assert cut["error"] == "attempt interrupted"
    assert await queued(redis, settings) == [task_id]
    assert not await redis.exists(in_progress_key_prefix + task_id), "no lock left to wait for"
    assert smtp_server.messages == []

    await spawn("worker")

    async def sent() -> bool:
        return await _state(client, task_id) == "SUCCESS"

    await wait_until(sent, within=STARTUP)
    assert (await status_of(client, task_id))["attempts"] == 2
    assert len(smtp_server.messages) == 1


async def test_sigterm_past_the_grace_lets_a_job_writing_its_bookkeeping_finish(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    smtp_server: SmtpRecorder,
    redis_server: RedisServer,
    spawn: Spawn,
) -> None:
    """The case the stop rule exists for: the email is sent (the job's code has ended) and its
    bookkeeping is still being written when the grace runs out. Cut, it would be queued again
    and run again; instead it is recorded once and the worker stops after writing it."""
    # the run's finishing call, held on its way to Redis: sent only once the job's code ended,
    # it carries the attempt's end (service.engine.finish chains the two scripts)
    end_script = chained(finish._FINISH, attempt_scripts._END).sha.encode()
    async with HoldingRelay(redis_server.port, hold=end_script) as relay:
        worker = await spawn("worker", worker_shutdown_grace=1, redis_url=relay.url())
        task_id = await _post_email(client)
        await asyncio.wait_for(relay.held.wait(), STARTUP)
        assert [m.message["Subject"] for m in smtp_server.messages] == ["Exactly once"]

        worker.signal(signal.SIGTERM)

        async def grace_over() -> bool:
            return "wait complete" in await worker.output()

        await wait_until(grace_over, within=STARTUP)
        assert worker.running(), "it waits for the bookkeeping being written"
        assert await _state(client, task_id) == "STARTED"
        relay.release()
        assert await worker.wait(STARTUP) == 0

    done = await status_of(client, task_id)
    assert done["status"] == "SUCCESS"
    assert done["attempts"] == 1
    assert [a["outcome"] for a in done["history"]] == ["success"]
    assert await queued(redis, settings) == [], "not queued to run again"
    assert "will be run again" not in await worker.output()
    assert len(smtp_server.messages) == 1


async def test_sigkill_mid_webhook_redelivers_with_the_same_idempotency_key(
    client: TestClient[Any, Any], spawn: Spawn
) -> None:
    keys: list[str] = []
    answer = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        keys.append(request.headers["Idempotency-Key"])
        if len(keys) == 1:
            await answer.wait()  # the first delivery is held until its worker is dead
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", receive)
    target = TestServer(app, host="127.0.0.1")
    await target.start_server()
    try:
        first = await spawn("worker")
        response = await client.post(
            "/webhooks", json={"url": str(target.make_url("/hook")), "payload": {"n": 1}}
        )
        task_id = (await response.json())["task_id"]

        async def delivered_once() -> bool:
            return len(keys) == 1

        await wait_until(delivered_once, within=STARTUP)
        first.signal(signal.SIGKILL)
        await first.wait(10)
        answer.set()
        await spawn("worker")

        async def done() -> bool:
            return await _state(client, task_id) == "SUCCESS"

        await wait_until(done, within=STARTUP)
    finally:
        answer.set()
        await target.close()
    # the receiver saw the payload twice, both times under the job's id: it can drop the copy
    assert keys == [task_id, task_id]
