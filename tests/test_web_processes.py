"""`python -m web` with WEB_PROCESSES > 1: gunicorn forks the processes, keeps them up, and
every one of them serves the same API on the same port."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gunicorn.arbiter import Arbiter
from gunicorn.glogging import Logger

from settings import Settings
from tests.conftest import AUTH_HEADERS, TEST_API_TOKEN, free_port
from tests.processes import ServiceProcess
from tests.test_worker_process import service_env
from tests.waiting import wait_until
from web.server import GunicornServer, WebWorker, bind_address


def children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


@pytest.fixture
def two_processes(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, ServiceProcess]]:
    port = free_port()
    env = service_env(
        settings,
        WEB_PORT=str(port),
        WEB_PROCESSES="2",
        LOG_FORMAT="json",
        API_TOKENS=TEST_API_TOKEN,
    )
    web = ServiceProcess(["-m", "web"], env, tmp_path / "web.log")
    try:
        yield f"http://127.0.0.1:{port}", web
    finally:
        web.stop()


async def _replaced(pid: int, gone: int | None = None) -> bool:
    """Whether gunicorn (``pid``) runs two processes again, ``gone`` not among them."""
    now = await asyncio.to_thread(children, pid)
    return len(now) == 2 and gone not in now


async def _healthy(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(f"{url}/health") as response:
            return response.status == 200
    except aiohttp.ClientConnectionError:
        return False


async def _served_by(url: str, web: ServiceProcess, pid: int) -> bool:
    """Whether process ``pid`` has answered a request yet (one new connection per call, so
    the kernel hands it to either process)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        await _healthy(fresh, url)
    lines = await asyncio.to_thread(web.lines)
    return any(line.get("event") == "request" and line["pid"] == pid for line in lines)


async def test_two_processes_serve_the_api_and_a_dead_one_is_replaced(
    two_processes: tuple[str, ServiceProcess], redis: Any, settings: Settings
) -> None:
    url, web = two_processes
    async with aiohttp.ClientSession(headers=AUTH_HEADERS) as session:
        await wait_until(lambda: _healthy(session, url), within=30)
        await wait_until(lambda: _replaced(web.popen.pid), within=30)
        first = await asyncio.to_thread(children, web.popen.pid)

        task_ids = []
        for n in range(20):  # enough requests that both processes take some
            async with session.post(f"{url}/events", json={"event": {"n": n}}) as response:
                assert response.status == 202
                task_ids.append((await response.json())["task_id"])
        assert len(set(task_ids)) == 20
        assert await redis.zcard(settings.queue_name) == 20

        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        await wait_until(lambda: _replaced(web.popen.pid, gone=victim), within=30)
        (replacement,) = await asyncio.to_thread(children, web.popen.pid) - first
        # serving, not just forked (a SIGTERM while it boots: see the test below)
        await wait_until(lambda: _served_by(url, web, replacement), within=30)
        async with session.post(f"{url}/events", json={"event": {"n": 20}}) as response:
            assert response.status == 202

    await asyncio.to_thread(web.stop)
    assert web.popen.returncode == 0
    lines = await asyncio.to_thread(web.lines)  # every line, gunicorn's own included, is JSON
    served_by = {line["pid"] for line in lines if line.get("event") == "request"}
    assert len(served_by) >= 2
    assert any(line["logger"] == "gunicorn.error" for line in lines)


def test_ipv6_hosts_are_bracketed_for_gunicorn() -> None:
    assert bind_address("127.0.0.1", 8080) == "127.0.0.1:8080"
    assert bind_address("::1", 8080) == "[::1]:8080"


@pytest.mark.parametrize(
    ("queued", "stops"),
    [([signal.SIGTERM], True), ([signal.SIGHUP, signal.SIGINT], True), ([signal.SIGHUP], False)],
)
def test_a_stop_signal_that_came_while_a_worker_booted_stops_it(
    settings: Settings, queued: list[signal.Signals], stops: bool
) -> None:
    """What gunicorn's inherited handler left in the worker's copy of the master's queue."""
    server = GunicornServer(settings)
    worker = WebWorker(0, os.getpid(), [], server, 30, server.cfg, Logger(server.cfg))
    worker.loop = asyncio.new_event_loop()
    saved = list(Arbiter.SIG_QUEUE)
    Arbiter.SIG_QUEUE[:] = queued
    try:
        worker.init_signals()
        assert worker.alive is not stops
        assert Arbiter.SIG_QUEUE == []  # the master's signals are not the worker's to handle
    finally:
        worker.loop.close()  # and with it the worker's signal handlers
        worker.tmp.close()  # its heartbeat file
        Arbiter.SIG_QUEUE[:] = saved
