"""Replaying a delivered webhook: a new job that links to its original, against real
loopback receivers; and what is refused (unknown ids, other jobs, unfinished ones)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from pytest_aiohttp import AiohttpServer
from yarl import URL

from settings import Settings
from tests.conftest import (
    AUTH_HEADERS,
    ClientFactory,
    RunWorker,
    assert_refused,
    queued,
    status_of,
)
from tests.dashboard_client import Dashboard
from tests.webhook_targets import queue_webhook
from web import create_app

PAYLOAD = {"event": "invoice.paid", "invoice": 7}


@dataclass
class Receiver:
    """Answers ``statuses`` in turn, then 200; keeps each request's JSON and headers."""

    statuses: list[int] = field(default_factory=list)
    received: list[tuple[Any, dict[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((await request.json(), dict(request.headers)))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> tuple[Receiver, str]:
    recorder = Receiver()
    app = web.Application()
    app.router.add_post("/hook", recorder.handle)
    server = await aiohttp_server(app)
    return recorder, str(server.make_url("/hook"))


async def test_a_replay_is_a_new_job_that_links_to_its_original(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
    receiver: tuple[Receiver, str],
) -> None:
    target, url = receiver
    target.statuses = [500]  # the original needs a retry; the replay re-sends the payload
    original = await queue_webhook(client, url, PAYLOAD)
    await run_worker()
    assert (await status_of(client, original))["status"] == "SUCCESS"

    response = await client.post(f"/jobs/{original}/replay")

    assert response.status == 202, await response.text()
    body = await response.json()
    replay = body["task_id"]
    assert replay != original
    assert body["replay_of"] == original
    assert response.headers["Location"] == f"/task-status/{replay}"
    assert await queued(redis, settings) == [replay]
    pending = await status_of(client, replay)
    assert pending["status"] == "PENDING"
    assert pending["function"] == "deliver_webhook"
    assert pending["replay_of"] == original

    await run_worker()

    done = await status_of(client, replay)
    assert done["status"] == "SUCCESS"
    assert done["replay_of"] == original
    assert (await status_of(client, original))["replays"] == [replay]
    assert [payload for payload, _ in target.received] == [PAYLOAD] * 3
    keys_sent = [headers["Idempotency-Key"] for _, headers in target.received]
    assert keys_sent == [original, original, replay], "a replay is a new delivery, not a repeat"
    assert "replays" not in done
    assert "replay_of" not in await status_of(client, original)

    # job search finds the replay by its webhook host, as it finds the original
    host = URL(url).host
    found = await (await client.get("/jobs", params={"key": str(host)})).json()
    assert [job["task_id"] for job in found["jobs"]] == [replay, original]


async def test_a_failed_delivery_can_be_replayed_and_each_replay_is_listed(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    receiver: tuple[Receiver, str],
) -> None:
    target, url = receiver
    target.statuses = [410]  # a 4xx: failed at once
    original = await queue_webhook(client, url, PAYLOAD)
    await run_worker()
    assert (await status_of(client, original))["status"] == "FAILURE"

    first = (await (await client.post(f"/jobs/{original}/replay")).json())["task_id"]
    second = (await (await client.post(f"/jobs/{original}/replay")).json())["task_id"]
    await run_worker()

    assert (await status_of(client, original))["replays"] == [second, first]
    for replay in (first, second):
        assert (await status_of(client, replay))["status"] == "SUCCESS"


async def test_unknown_ids_and_other_jobs_are_refused_and_nothing_is_queued(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, run_worker: RunWorker
) -> None:
    response = await client.post("/jobs/0123456789abcdef/replay")
    await assert_refused(response, 404, "no task", redis, settings)
    response = await client.post("/jobs/not%20an%20id/replay")
    await assert_refused(response, 404, "no task", redis, settings)

    event = (await (await client.post("/events", json={"event": "x"})).json())["task_id"]
    await run_worker()
    assert (await status_of(client, event))["status"] == "SUCCESS"
    response = await client.post(f"/jobs/{event}/replay")
    await assert_refused(response, 409, "only these jobs can be replayed", redis, settings)
    assert "replays" not in await status_of(client, event)


async def test_a_webhook_not_yet_delivered_is_not_replayed(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    receiver: tuple[Receiver, str],
) -> None:
    _, url = receiver
    original = await queue_webhook(client, url, PAYLOAD)
    response = await client.post(f"/jobs/{original}/replay")
    assert response.status == 409
    assert "not finished yet" in (await response.json())["error"]
    assert await queued(redis, settings) == [original]


async def test_arguments_over_the_replay_limit_are_not_kept_and_not_replayed(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
    receiver: tuple[Receiver, str],
) -> None:
    target, url = receiver
    original = await queue_webhook(client, url, {"blob": "x" * 2000})
    await run_worker(settings.model_copy(update={"replay_max_argument_bytes": 1024}))
    assert len(target.received) == 1

    response = await client.post(f"/jobs/{original}/replay")

    await assert_refused(response, 409, "REPLAY_MAX_ARGUMENT_BYTES", redis, settings)


async def test_the_dashboards_replay_button_needs_csrf_and_leads_to_the_new_job(
    aiohttp_client: ClientFactory,
    redis: ArqRedis,
    settings: Settings,
    client: TestClient[Any, Any],
    run_worker: RunWorker,
    receiver: tuple[Receiver, str],
) -> None:
    _, url = receiver
    original = await queue_webhook(client, url, PAYLOAD)
    await run_worker()
    board = Dashboard(await aiohttp_client(create_app(settings)))
    assert (await board.sign_in()).status == 303
    page = await board.page(f"/dashboard/jobs/{original}")
    assert f'action="/dashboard/jobs/{original}/replay"' in page

    refused = await board.post(f"/dashboard/jobs/{original}/replay", csrf=False)
    assert refused.status == 403
    cross_site = await board.post(
        f"/dashboard/jobs/{original}/replay", headers={"Origin": "https://evil.example"}
    )
    assert cross_site.status == 403
    assert await queued(redis, settings) == []

    done = await board.post(f"/dashboard/jobs/{original}/replay")
    assert done.status == 303
    replay = done.headers["Location"].rsplit("/", 1)[1]
    assert await queued(redis, settings) == [replay]
    replay_page = await board.page(f"/dashboard/jobs/{replay}")
    assert f'href="/dashboard/jobs/{original}" data-field="replay-of"' in replay_page
    assert f'href="/dashboard/jobs/{replay}"' in await board.page(f"/dashboard/jobs/{original}")
    # a job that is not a webhook shows no Replay button
    event = (await (await client.post("/events", json={"event": "x"})).json())["task_id"]
    await run_worker()
    assert "/replay" not in await board.page(f"/dashboard/jobs/{event}")


async def test_a_replay_counts_against_the_tokens_payload_quota(
    aiohttp_client: ClientFactory,
    redis: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
    receiver: tuple[Receiver, str],
) -> None:
    target, url = receiver
    tight = settings.model_copy(
        update={"payload_quota_per_token": 65536, "replay_max_argument_bytes": 65536}
    )
    client = await aiohttp_client(create_app(tight), headers=AUTH_HEADERS)
    original = await queue_webhook(client, url, {"blob": "x" * 40_000})  # ~40 KB of 64 KiB
    await run_worker(tight)
    assert len(target.received) == 1

    response = await client.post(f"/jobs/{original}/replay")

    await assert_refused(response, 429, "quota", redis, settings)
    assert "Retry-After" in response.headers
    assert "replays" not in await status_of(client, original)
