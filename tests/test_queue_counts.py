"""Jobs waiting, deferred and running are counted apart (service.engine.queue_counts), in
/health, on the dashboard's overview and in the worker's health line and metrics.

arq keeps a running job in its queue, so the queue's size counted it as waiting and its
oldest due entry, a long job running for a minute, showed as a job waiting for a minute.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.engine.loop import BatchWorker as Worker
from service.queue.enqueue import enqueue
from service.worker.options import worker_options
from settings import Settings
from tests.conftest import ClientFactory, free_port
from tests.dashboard_client import Dashboard
from tests.waiting import wait_until
from tests.webhook_targets import HeldTarget, ServerFactory, hook_url
from web import create_app

RAN_FOR = 60.0  # seconds the long job has been due when the counts are read
EXPECTED = {"waiting": 1, "deferred": 1, "running": 1}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """One slot, so a due job waits while the long one runs; the worker's own /metrics."""
    return settings.model_copy(update={"worker_max_jobs": 1, "worker_metrics_port": free_port()})


@pytest.fixture
async def worker(settings: Settings, redis: ArqRedis) -> AsyncIterator[Worker]:
    options = worker_options(settings)
    options.update(handle_signals=False, health_check_interval=0.05)
    running = Worker(**options)
    task = running.loop.create_task(running.main())
    yield running
    task.cancel()
    await running.close()


async def _worker_metrics(settings: Settings) -> dict[str, float]:
    url = f"http://127.0.0.1:{settings.worker_metrics_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    found = re.findall(r'^jobservice_queue_jobs\{state="(\w+)"\} (\S+)$', text, re.MULTILINE)
    return {state: float(value) for state, value in found}


async def test_a_long_job_a_deferred_one_and_a_waiting_one_are_counted_apart(
    aiohttp_client: ClientFactory,
    client: TestClient[Any, Any],
    settings: Settings,
    redis: ArqRedis,
    aiohttp_server: ServerFactory,
    worker: Worker,
) -> None:
    target = HeldTarget()
    url = await hook_url(aiohttp_server, target.handle)
    due_a_minute_ago = int((time.time() - RAN_FOR) * 1000)
    await enqueue(redis, "deliver_webhook", {"url": url, "payload": {}}, run_at_ms=due_a_minute_ago)
    await target.arrived.wait()  # the long job runs, and holds the worker's one slot
    await enqueue(redis, "log_event", {"event": {"n": 1}})  # due, waits for the slot
    await enqueue(
        redis, "log_event", {"event": {"n": 2}}, run_at_ms=int(time.time() * 1000) + 600_000
    )

    try:
        health = await (await client.get("/health")).json()
        assert health["jobs"] == EXPECTED
        assert health["queued"] == 2  # in the queue, not running: waiting and deferred

        async def worker_counted() -> bool:
            return await _worker_metrics(settings) == {k: float(v) for k, v in EXPECTED.items()}

        await wait_until(worker_counted, within=10)

        async def health_line_counted() -> bool:
            body = await (await client.get("/health")).json()
            line = body["worker"]["last_check"] or ""
            return "queued=2 waiting=1 deferred=1 running=1" in line

        await wait_until(health_line_counted, within=10)

        dashboard = Dashboard(await aiohttp_client(create_app(settings)))
        assert (await dashboard.sign_in()).status == 303
        page = await dashboard.page("/dashboard")
        cards = re.findall(
            r'id="stat-(\w+)"><div class="label">[^<]*</div><div class="value[^"]*">([^<]*)</div>'
            r'<div class="hint">([^<]*)</div>',
            page,
        )
        shown = {name: (value, hint) for name, value, hint in cards}
        assert shown["queued"] == ("1", "due, not started · 1 deferred")
        assert shown["running"][0] == "1"
        # the waiting job was queued a moment ago; the long job, due a minute ago, runs
        assert re.fullmatch(r"\d+ ms|\d\.\d s", shown["oldest"][0]), shown
    finally:
        target.release.set()
