"""One worker runs HTTP-bound and email jobs at the same time, not one after another."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import RunWorker, SmtpRecorder, status_of
from tests.waiting import wait_until
from tests.webhook_targets import ServerFactory, hook_url


async def test_email_is_sent_while_webhooks_are_still_in_flight(
    client: TestClient[Any, Any],
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
    aiohttp_server: ServerFactory,
) -> None:
    in_flight: list[web.Request] = []
    both_arrived = asyncio.Event()
    release = asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        in_flight.append(request)
        if len(in_flight) == 2:
            both_arrived.set()
        await release.wait()
        return web.json_response({})

    url = await hook_url(aiohttp_server, hold)
    hooks = [
        (await (await client.post("/webhooks", json={"url": url, "payload": {"n": n}})).json())
        for n in range(2)
    ]
    email = await client.post(
        "/send-email", json={"to": "a@example.com", "subject": "s", "body": "b"}
    )
    email_id = (await email.json())["task_id"]

    worker = asyncio.create_task(run_worker())
    await asyncio.wait_for(both_arrived.wait(), 10)

    async def email_done() -> bool:
        return bool((await status_of(client, email_id))["status"] == "SUCCESS")

    # Both webhooks are held open by the target, yet the email goes out meanwhile.
    await wait_until(email_done)
    assert len(smtp_server.messages) == 1
    assert [(await status_of(client, h["task_id"]))["status"] for h in hooks] == ["STARTED"] * 2

    release.set()
    await worker
    assert [(await status_of(client, h["task_id"]))["status"] for h in hooks] == ["SUCCESS"] * 2
