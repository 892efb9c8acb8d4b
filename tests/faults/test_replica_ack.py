"""REDIS_MIN_REPLICAS_ACK: a job is answered 202 (201) only once WAIT says a replica holds it.

A real master and a real replica. A stalled replica (SIGSTOP: connected, answering nothing)
is the decisive case: WAIT sent on any other connection than the enqueue's would find that
connection's writes (none, or older ones) already acknowledged and let a 202 through.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from redis.asyncio import Redis

from service.queue.enqueue import enqueue
from settings import Settings
from tests.conftest import (
    TEST_API_TOKEN,
    RunWorker,
    SmtpRecorder,
    accepted_task,
    free_port,
    status_of,
)
from tests.faults.processes import RedisServer
from tests.files import names_in
from tests.images import image_bytes
from tests.waiting import wait_until
from web.errors import NOT_CONFIRMED

ACK_TIMEOUT_MS = 500
QUICK = 2.0  # seconds: a refusal slower than this would be a hang, not an answer

Post = Callable[[TestClient[Any, Any], int], Awaitable[ClientResponse]]


@pytest.fixture
async def replica(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[RedisServer]:
    master = Redis(port=redis_server.port, socket_timeout=2)
    try:  # the replica's first sync at once, not after Redis's 5 s wait for more replicas
        await master.config_set("repl-diskless-sync-delay", 0)
    finally:
        await master.aclose()
    binary = redis_server.process.argv[0]
    # fsync once a second: a replica that fsyncs every write before acknowledging it can miss
    # the ack timeout on a machine whose disk is busy
    follow = ("--replicaof", "127.0.0.1", str(redis_server.port), "--appendfsync", "everysec")
    server = RedisServer(binary, free_port(), tmp_path / "replica", *follow)
    await server.start()
    client = Redis(port=redis_server.port, socket_timeout=2)

    async def in_sync() -> bool:
        """WAIT itself: the master counts a replica only once it has acknowledged its sync
        (replicas acknowledge once a second)."""
        return bool(await client.wait(1, 100) == 1)

    try:
        await wait_until(in_sync, within=10)
        yield server
    finally:
        await client.aclose()
        server.process.signal(signal.SIGCONT)  # a test that failed while it was stopped
        await server.stop()


@pytest.fixture
def settings(tmp_path: Path, smtp_server: SmtpRecorder, redis_server: RedisServer) -> Settings:
    return Settings(
        redis_url=redis_server.url(),
        redis_min_replicas_ack=1,
        redis_replica_ack_timeout=ACK_TIMEOUT_MS,
        redis_socket_timeout=2,
        data_dir=tmp_path / "data",
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        api_tokens=(TEST_API_TOKEN,),
        rate_limit_per_recipient="",
        job_max_tries=1,
    )


def _json(path: str, body: dict[str, Any] | None = None) -> Post:
    async def post(client: TestClient[Any, Any], n: int) -> ClientResponse:
        response: ClientResponse = await client.post(path, json=body)
        return response

    return post


async def _register(client: TestClient[Any, Any], n: int) -> ClientResponse:
    response: ClientResponse = await client.post(
        "/register", json={"name": f"User {n}", "email": f"user{n}@example.com"}
    )
    return response


async def _upload(client: TestClient[Any, Any], n: int) -> ClientResponse:
    form = aiohttp.FormData()
    form.add_field("file", image_bytes((32, 32)), filename="a.jpg", content_type="image/jpeg")
    response: ClientResponse = await client.post("/upload", data=form)
    return response


EMAIL = {"to": "ann@example.com", "subject": "Held by a replica", "body": "hi"}
# every route that answers 202 or 201 for a job it queued (the failed-job retry: below)
ROUTES: dict[str, tuple[Post, int]] = {
    "POST /send-email": (_json("/send-email", EMAIL), 202),
    "POST /jobs": (_json("/jobs", {"function": "log_event", "kwargs": {"event": {}}}), 202),
    "POST /webhooks": (_json("/webhooks", {"url": "https://example.com/h", "payload": {}}), 202),
    "POST /events": (_json("/events", {"event": {"n": 1}}), 202),
    "POST /reports/daily": (_json("/reports/daily"), 202),
    "POST /upload": (_upload, 202),
    "POST /register": (_register, 201),
}


async def _failed_jobs(
    client: TestClient[Any, Any], run_worker: RunWorker, smtp_server: SmtpRecorder, count: int
) -> list[str]:
    """``count`` emails the SMTP server refused for good: each in the failed-jobs list."""
    smtp_server.replies = ["550 no such mailbox"] * count
    tasks = [await accepted_task(client, "/send-email", EMAIL) for _ in range(count)]
    await run_worker()
    for task_id in tasks:
        assert (await status_of(client, task_id))["status"] == "FAILURE"
    return tasks


async def test_every_route_that_queues_a_job_waits_for_a_replica(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    replica: RedisServer,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    to_retry, retried_while_stalled = await _failed_jobs(client, run_worker, smtp_server, 2)
    n = 0
    for name, (post, accepted) in ROUTES.items():
        n += 1
        response = await post(client, n)
        assert response.status == accepted, f"{name}: {await response.text()}"
    assert (await client.post(f"/jobs/{to_retry}/retry")).status == 202
    stored_uploads = await names_in(settings.uploads_dir)

    refused_signup = 0
    replica.process.signal(signal.SIGSTOP)
    try:
        for name, (post, _) in ROUTES.items():
            n += 1
            refused_signup = n if name == "POST /register" else refused_signup
            started = asyncio.get_running_loop().time()
            response = await post(client, n)
            elapsed = asyncio.get_running_loop().time() - started
            assert response.status == 503, f"{name}: {await response.text()}"
            assert (await response.json())["error"] == NOT_CONFIRMED, name
            assert elapsed < QUICK, f"{name} took {elapsed:.1f} s"
        refused = await client.post(f"/jobs/{retried_while_stalled}/retry")
        assert refused.status == 503
        assert (await refused.json())["error"] == NOT_CONFIRMED
    finally:
        replica.process.signal(signal.SIGCONT)

    # what a refused request did is undone where the route undoes it: no user, no file
    assert await names_in(settings.uploads_dir) == stored_uploads
    assert (await _register(client, refused_signup)).status == 201, "the refused sign-up is gone"
    # and with the replica back, jobs are accepted again
    for name, (post, accepted) in ROUTES.items():
        n += 1
        assert (await post(client, n)).status == accepted, name


async def test_concurrent_enqueues_share_one_wait(
    redis: ArqRedis, settings: Settings, replica: RedisServer
) -> None:
    """The confirmed enqueues of one loop tick leave as one pipeline ending with one WAIT."""
    await enqueue(redis, "log_event", {"event": {}})  # the script is loaded from now on
    before = await _waits(redis)
    await asyncio.gather(*(enqueue(redis, "log_event", {"event": {"n": n}}) for n in range(50)))
    assert await _waits(redis) - before == 1
    assert await redis.zcard(settings.queue_name) == 51


async def _waits(redis: ArqRedis) -> int:
    stats: dict[str, Any] = await redis.info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))
