"""/health reports Redis and the worker; the API answers 503 fast while Redis is away."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.engine.loop import BatchWorker as Worker
from service.worker.options import worker_options
from settings import Settings
from tests.conftest import AUTH_HEADERS, ClientFactory
from tests.waiting import wait_until
from web import create_app
from web.health import add_dependency_check


async def test_health_without_a_worker_counts_what_waits(client: TestClient[Any, Any]) -> None:
    response = await client.get("/health")
    assert response.status == 200
    body = await response.json()
    assert body == {
        "status": "ok",
        "redis": "ok",
        "dependencies": {"database": "ok", "storage": "ok"},
        "worker": {"alive": False, "count": 0, "last_check": None},
        "queued": 0,
        "paused": False,
        "paused_at": None,
        "open_breakers": [],
        "jobs": {"waiting": 0, "deferred": 0, "running": 0},
        "queues": {
            "default": {"waiting": 0, "deferred": 0, "running": 0, "workers": 0},
            "images": {"waiting": 0, "deferred": 0, "running": 0, "workers": 0},
        },
    }
    await client.post("/events", json={"event": {"n": 1}})
    body = await (await client.get("/health")).json()
    assert body["queued"] == 1
    assert body["jobs"] == {"waiting": 1, "deferred": 0, "running": 0}
    assert body["queues"]["default"]["waiting"] == 1


async def test_a_dependency_that_does_not_answer_makes_health_degraded_not_down(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    async def answers() -> None:
        pass

    async def refuses() -> None:
        raise ConnectionRefusedError("nobody there")

    async def hangs() -> None:  # a server behind a dropped route: no answer, no refusal
        await asyncio.Event().wait()

    app = create_app(settings)
    add_dependency_check(app, "files", answers)
    add_dependency_check(app, "users", refuses)
    add_dependency_check(app, "search", hangs)
    client = await aiohttp_client(app)
    response = await client.get("/health")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "degraded"
    assert body["redis"] == "ok"
    assert body["dependencies"] == {
        "database": "ok",
        "files": "ok",
        "users": "unreachable",
        "search": "unreachable",
        "storage": "ok",
    }


async def test_health_sees_a_running_worker(
    client: TestClient[Any, Any], settings: Settings, redis: ArqRedis
) -> None:
    options = worker_options(settings)
    options.update(poll_delay=0.01, handle_signals=False)
    worker = Worker(**options)
    task = asyncio.create_task(worker.main())
    try:

        async def worker_alive() -> bool:
            body = await (await client.get("/health")).json()
            return bool(body["worker"]["alive"])

        await wait_until(worker_alive)
        body = await (await client.get("/health")).json()
        assert "j_complete=" in body["worker"]["last_check"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.close()


async def test_redis_down_gives_quick_503s(
    aiohttp_client: ClientFactory,
    settings: Settings,
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, process = private_redis
    own = settings.model_copy(update={"redis_url": url})

    async def reachable() -> bool:
        return await asyncio.to_thread(_ping, url)

    await wait_until(reachable)
    client = await aiohttp_client(create_app(own), headers=AUTH_HEADERS)
    assert (await client.get("/health")).status == 200

    process.kill()
    await asyncio.to_thread(process.wait)

    health = await asyncio.wait_for(client.get("/health"), 10)
    assert health.status == 503
    assert (await health.json())["redis"] == "unreachable"
    send = await asyncio.wait_for(
        client.post("/send-email", json={"to": "a@example.com", "subject": "s", "body": "b"}), 15
    )
    assert send.status == 503
    assert "unavailable" in (await send.json())["error"]


def _ping(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=0.2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()
