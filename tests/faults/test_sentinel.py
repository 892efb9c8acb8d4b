"""Every Redis client of the service finds the master through Sentinel and follows it.

A real master, a replica and three sentinels (tests/faults/sentinels.py); the web app runs
in-process so that its clients can be looked at one by one: the pool under the API, the rate
limits' storage, dashboard sessions, idempotency keys, a live event stream (pub/sub); a worker
that runs through the failover, one started after it, and ``arq service.WorkerSettings
--check`` as a process. REDIS_URL names no server at all: only the sentinels know where the
master is. (The real web and worker processes under load: test_sentinel_failover.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from service.engine.arq_api import health_check_key_suffix, job_key_prefix
from service.engine.loop import BatchWorker as Worker
from service.queue.enqueue import enqueue
from service.store import keys
from service.store.redis import open_pool
from service.store.sentinel import MASTER_CHECK_INTERVAL
from service.worker.options import worker_options
from settings import Settings
from tests.conftest import (
    TEST_API_TOKEN,
    ClientFactory,
    RunWorker,
    SmtpRecorder,
    accepted_task,
    status_of,
)
from tests.dashboard_client import Dashboard
from tests.faults.conftest import Spawn
from tests.faults.sentinels import MASTER_NAME, SentinelGroup
from tests.sse import all_events, next_event
from tests.waiting import wait_until
from web import create_app

EMAIL = {"to": "ann@example.com", "subject": "Across a failover", "body": "hi"}
FAILOVER = 30  # seconds Sentinel may take to replace a master on a busy machine
# seconds a running worker takes to reach the new master once it is named (with redis-py's
# own Sentinel connection it would retry the dead address for REDIS_RETRY_SECONDS, 30 s)
RIDE_OUT = 10.0
MOVED_WITHIN = 3.0  # seconds after a switch by which writes go to the new master


@pytest.fixture
def settings(tmp_path: Path, smtp_server: SmtpRecorder, sentinel_group: SentinelGroup) -> Settings:
    return Settings(
        redis_url="redis://no-such-host.invalid/0",  # the database only: the sentinels say where
        redis_sentinels=sentinel_group.addresses,
        redis_sentinel_master=MASTER_NAME,
        redis_socket_timeout=1,
        data_dir=tmp_path / "data",
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        api_tokens=(TEST_API_TOKEN,),
        rate_limit_per_recipient="2/hour",
        retry_backoff_base=0.01,
        retry_backoff_max=0.05,
    )


@pytest.fixture
async def riding_worker(settings: Settings) -> AsyncIterator[Settings]:
    """A worker running through the failover, on a queue of its own (the settings it has)."""
    own = settings.model_copy(update={"queue_name": "riding"})
    options = worker_options(own)
    options.update(handle_signals=False)
    worker = Worker(**options)
    task = asyncio.create_task(worker.main())
    yield own
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await worker.close()


@pytest.fixture
async def new_master(sentinel_group: SentinelGroup) -> AsyncIterator[Redis]:
    """A plain client of the replica that the failover will promote."""
    client = Redis(port=sentinel_group.replicas[0].port, socket_timeout=2)
    yield client
    await client.aclose()


async def _subscribers(redis: Redis, channel: str) -> int:
    [(_, count)] = await redis.pubsub_numsub(channel)
    return int(count)


async def test_every_client_follows_a_killed_master(
    client: TestClient[Any, Any],
    aiohttp_client: ClientFactory,
    settings: Settings,
    sentinel_group: SentinelGroup,
    new_master: Redis,
    smtp_server: SmtpRecorder,
    run_worker: RunWorker,
    riding_worker: Settings,
    spawn: Spawn,
) -> None:
    browser = Dashboard(await aiohttp_client(create_app(settings)))  # the cookie, no token
    assert (await browser.sign_in()).status == 303
    once = {"Idempotency-Key": "order-42"}
    first = await client.post("/send-email", json=EMAIL, headers=once)
    assert first.status == 202
    task_id = (await first.json())["task_id"]
    await accepted_task(client, "/send-email", {**EMAIL, "subject": "Second"})  # limit: 2/hour
    stream = await client.get(f"/jobs/{task_id}/events")
    opening = await next_event(stream)
    assert opening is not None
    assert opening.data["status"] == "PENDING"
    overview = await client.get("/dashboard/events")  # the dashboard's redraw cue

    async with sentinel_group.switch() as switched:
        await sentinel_group.master.stop()  # SIGKILL
        promoted = await asyncio.wait_for(switched, FAILOVER)
    assert promoted == sentinel_group.replicas[0].port

    # no restart, no retry by the client: the first requests after the switch are served
    replayed = await client.post("/send-email", json=EMAIL, headers=once)  # idempotency keys
    assert replayed.status == 200
    assert (await replayed.json())["task_id"] == task_id
    over = await client.post("/send-email", json={**EMAIL, "subject": "Third"})  # rate limits
    assert over.status == 429, await over.text()
    await browser.page("/dashboard")  # the session, read from the new master

    async def stream_resubscribed() -> bool:
        return (
            await _subscribers(new_master, keys.job_events(task_id, keys.database_of(new_master)))
            == 1
        )

    await wait_until(stream_resubscribed, within=10)

    # the worker that ran through it reconnects by itself, to the new master
    riding_queue = await open_pool(riding_worker)
    try:
        job_id = await enqueue(riding_queue, "log_event", {"event": {"after": "failover"}})
    finally:
        await riding_queue.aclose(close_connection_pool=True)

    async def ran() -> bool:
        return bool((await status_of(client, job_id))["status"] == "SUCCESS")

    await wait_until(ran, within=RIDE_OUT)

    await run_worker()  # built after the failover from the same settings
    events = await all_events(stream)
    # STARTED came by pub/sub: the stream's periodic re-read would only have seen SUCCESS
    assert [e.data["status"] for e in events if e.kind == "status"] == ["STARTED", "SUCCESS"]
    assert sorted(m.message["Subject"] for m in smtp_server.messages) == [
        "Across a failover",
        "Second",
    ]
    cue = await asyncio.wait_for(next_event(overview), RIDE_OUT)  # still open, and telling
    assert cue is not None
    assert cue.kind == "changed"

    # arq's own health check: the key exists on the new master only
    await new_master.psetex(settings.queue_name + health_check_key_suffix, 60_000, "alive")
    check = await spawn("worker", "--check")
    assert await check.wait(within=30) == 0, await check.output()


async def test_a_master_replaced_while_still_up_gets_no_more_writes(
    client: TestClient[Any, Any], sentinel_group: SentinelGroup, new_master: Redis
) -> None:
    """SENTINEL FAILOVER (or a partition): the old master stays up, and writable, for about
    ten seconds until Sentinel makes it a replica, which drops what it took meanwhile."""
    await accepted_task(client, "/events", {"event": {}})  # the pool now holds a connection
    async with sentinel_group.switch() as switched:
        sentinel = sentinel_group.sentinel()
        try:
            await sentinel.sentinel_failover(MASTER_NAME)  # type: ignore[no-untyped-call]
        finally:
            await sentinel.aclose()
        await asyncio.wait_for(switched, FAILOVER)
    switched_at = asyncio.get_running_loop().time()

    async def lands_on_the_new_master() -> bool:
        task_id = await accepted_task(client, "/events", {"event": {}})
        return bool(await new_master.exists(job_key_prefix + task_id))

    # the pool asks the sentinels again within MASTER_CHECK_INTERVAL, not after the ~10 s
    # Sentinel takes to demote the old master (a READONLY answer would end it then)
    assert MASTER_CHECK_INTERVAL < MOVED_WITHIN
    await wait_until(lands_on_the_new_master, within=MOVED_WITHIN)
    assert asyncio.get_running_loop().time() - switched_at < MOVED_WITHIN
    for _ in range(5):  # and stays there
        assert await lands_on_the_new_master()
