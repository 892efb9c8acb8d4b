"""Webhooks to a target that never answers hold at most WEBHOOK_HOST_CONCURRENCY worker slots
(service.worker.slots): the other jobs still start at once, and the webhooks waiting for a
slot of their host use up no try.

Measured: before, 60 webhooks held by the target took all 50 slots and an email queued behind
them waited until the target answered (about HOLD seconds); with the cap it starts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.engine.loop import BatchWorker as Worker
from settings import Settings
from tests.conftest import SmtpRecorder, accepted_task, background_worker, status_of
from tests.waiting import wait_until
from tests.webhook_targets import ServerFactory, hook_url, queue_webhook

HANGING = 60
HOLD = 8.0  # seconds the target holds each request at most (below WEBHOOK_TIMEOUT)
FAST_ENOUGH = 1.5  # seconds for the email, on a loaded 2-core machine; 0.06 s unloaded


class HangingTarget:
    """Holds every request until released (or HOLD s), counting those held at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self.served = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), HOLD)
        finally:
            self.in_flight -= 1
        self.served += 1
        return web.json_response({"ok": True})


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The defaults a user gets for slots and webhooks: 50 slots, 5 per host, 10 s timeout."""
    defaults = {
        name: Settings.model_fields[name].default
        for name in (
            "worker_max_jobs",
            "webhook_host_concurrency",
            "webhook_timeout",
            "webhook_job_timeout",
        )
    }
    return settings.model_copy(update=defaults)


@pytest.fixture
async def worker(settings: Settings, redis: ArqRedis) -> AsyncIterator[Worker]:
    async with background_worker(settings) as running:
        yield running


@pytest.mark.timeout(120)
async def test_webhooks_to_a_hanging_host_leave_the_other_slots_to_other_jobs(
    client: TestClient[Any, Any],
    settings: Settings,
    smtp_server: SmtpRecorder,
    aiohttp_server: ServerFactory,
    worker: Worker,
) -> None:
    target = HangingTarget()
    url = await hook_url(aiohttp_server, target.handle)
    hooks = [await queue_webhook(client, url, {"n": n}) for n in range(HANGING)]

    async def host_slots_taken() -> bool:
        return target.in_flight >= settings.webhook_host_concurrency

    await wait_until(host_slots_taken, within=10)
    queued_at = time.monotonic()
    email = {"to": "ann@example.com", "subject": "behind the webhooks", "body": "hi"}
    await accepted_task(client, "/send-email", email)

    async def email_arrived() -> bool:
        return len(smtp_server.messages) == 1

    await wait_until(email_arrived, within=HOLD + 10, interval=0.005)
    latency = time.monotonic() - queued_at
    print(f"email behind {HANGING} hanging webhooks: {latency * 1000:.0f} ms")
    assert latency < FAST_ENOUGH
    assert target.most_in_flight == settings.webhook_host_concurrency

    target.release.set()

    async def all_delivered() -> bool:
        states = [(await status_of(client, hook))["status"] for hook in hooks]
        return states == ["SUCCESS"] * HANGING

    await wait_until(all_delivered, within=60, interval=0.2)
    assert target.most_in_flight == settings.webhook_host_concurrency
    for hook in hooks:  # waiting for a slot used up no try, and left no attempt behind
        status = await status_of(client, hook)
        assert status["attempts"] == 1, status
        assert [entry["outcome"] for entry in status["history"]] == ["success"], status
