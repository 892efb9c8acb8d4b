"""The worker and the web app, as processes, refuse to start on a Redis that may evict jobs."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from tests.faults.conftest import Spawn
from tests.faults.processes import RedisServer

STARTUP = 30


async def test_worker_and_web_exit_non_zero_on_an_evicting_redis(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    admin = Redis(port=redis_server.port, socket_timeout=2)
    try:
        await admin.config_set("maxmemory-policy", "allkeys-lru")
    finally:
        await admin.aclose()
    worker, web = await asyncio.gather(spawn("worker"), spawn("web"))
    codes = await asyncio.gather(worker.wait(within=STARTUP), web.wait(within=STARTUP))
    assert list(codes) == [1, 1]
    for process, name in ((worker, "worker"), (web, "web")):
        output = await process.output()
        assert f"{name}: Redis's maxmemory-policy is 'allkeys-lru'" in output
        assert "refusing to start" in output
        assert "Traceback" not in output, output
    assert "worker ready" not in await worker.output()
    assert "Running on" not in await web.output()
