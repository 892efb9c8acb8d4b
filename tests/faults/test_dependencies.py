"""The worker process against an SMTP server that is down then up, and a webhook that hangs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiosmtpd.controller import Controller

from settings import Settings
from tests.conftest import SmtpRecorder, free_port, status_of
from tests.faults.conftest import Spawn
from tests.waiting import wait_until

STARTUP = 30


async def _state(client: TestClient[Any, Any], task_id: str) -> dict[str, Any]:
    return await status_of(client, task_id)


async def test_smtp_server_down_then_up_the_email_goes_out_once(
    client: TestClient[Any, Any], spawn: Spawn
) -> None:
    port = free_port()  # nothing listens here yet: every attempt is refused
    await spawn(
        "worker", smtp_port=port, job_max_tries=10, retry_backoff_base=0.2, retry_backoff_max=1
    )
    email = {"to": "ann@example.com", "subject": "Waited for SMTP", "body": "hi"}
    task_id = (await (await client.post("/send-email", json=email)).json())["task_id"]

    async def refused_twice() -> bool:
        status = await _state(client, task_id)
        return bool(status["status"] == "RETRY" and status["attempts"] >= 2)

    await wait_until(refused_twice, within=STARTUP)
    assert "SMTP server unreachable" in (await _state(client, task_id))["error"]

    late = SmtpRecorder(port=port)
    controller = Controller(late, hostname="127.0.0.1", port=port)
    await asyncio.to_thread(controller.start)  # starts a thread and waits for it
    try:

        async def sent() -> bool:
            return bool((await _state(client, task_id))["status"] == "SUCCESS")

        await wait_until(sent, within=20)
    finally:
        await asyncio.to_thread(controller.stop)
    done = await _state(client, task_id)
    assert done["attempts"] >= 3
    [mail] = late.messages
    assert mail.message["Subject"] == "Waited for SMTP"


@pytest.fixture
async def hanging_target() -> AsyncIterator[tuple[str, list[float]]]:
    """A webhook receiver that accepts each request and never answers it."""
    arrivals: list[float] = []
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        arrivals.append(asyncio.get_running_loop().time())
        await never.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hang)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/hook")), arrivals
    finally:
        never.set()
        await server.close()


async def test_a_hanging_webhook_holds_the_only_slot_for_seconds_not_the_job_timeout(
    client: TestClient[Any, Any],
    settings: Settings,
    smtp_server: SmtpRecorder,
    spawn: Spawn,
    hanging_target: tuple[str, list[float]],
) -> None:
    url, arrivals = hanging_target
    tries = 3
    await spawn("worker", worker_max_jobs=1, job_max_tries=tries)
    hook = await client.post("/webhooks", json={"url": url, "payload": {"n": 1}})
    assert hook.status == 202, await hook.text()
    hook_id = (await hook.json())["task_id"]

    async def first_attempt_hangs() -> bool:
        return len(arrivals) == 1

    await wait_until(first_attempt_hangs, within=STARTUP)
    email = {"to": "ann@example.com", "subject": "Not stuck behind a webhook", "body": "hi"}
    email_id = (await (await client.post("/send-email", json=email)).json())["task_id"]

    async def email_sent() -> bool:
        return bool((await _state(client, email_id))["status"] == "SUCCESS")

    # the one slot frees after WEBHOOK_TIMEOUT (1 s), far before WEBHOOK_JOB_TIMEOUT
    await wait_until(email_sent, within=20)

    async def webhook_given_up() -> bool:
        return bool((await _state(client, hook_id))["status"] == "FAILURE")

    await wait_until(webhook_given_up, within=20)
    failed = await _state(client, hook_id)
    assert failed["attempts"] == tries
    # cut by the request's own timeout (a transient error, retried), not by the job's limit
    assert f"gave up after {tries} attempts: webhook unreachable: timed out" in failed["error"]
    assert len(arrivals) == tries
    assert len(smtp_server.messages) == 1
