"""``python -m web`` started with a low open-files limit (``prlimit``, as systemd's default soft
limit of 1,024 is against LIVE_STREAMS_PER_PROCESS's 1,000 streams plus the Redis pool): it
raises its soft limit to the hard one, so a process full of live streams still answers
``/health`` and refuses the next stream with ``429``, not with a reset; with a hard limit below
what its caps need, it says so at start."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from settings import Settings
from tests.conftest import AUTH_HEADERS
from tests.faults.conftest import service_env, web_answers
from tests.faults.processes import Process
from web.open_files import needed

STARTUP = 30
STREAMS = 300  # LIVE_STREAMS_PER_PROCESS here, above the 256 open files the process starts with
POOL = 20  # WEB_REDIS_MAX_CONNECTIONS here


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[list[Process]]:
    processes: list[Process] = []
    yield processes
    for process in processes:
        await process.kill()
        print(f"----- {process.name} output -----\n{await process.output()}")


async def _web(settings: Settings, started: list[Process], soft: int, hard: int) -> Process:
    prlimit = await asyncio.to_thread(shutil.which, "prlimit")
    if prlimit is None:
        pytest.skip("needs prlimit (util-linux)")
    env = service_env(
        settings,
        live_streams_per_process=STREAMS,
        live_streams_per_token=STREAMS,
        web_redis_max_connections=POOL,
    )
    argv = [prlimit, f"--nofile={soft}:{hard}", "--", sys.executable, "-m", "web"]
    process = Process("web", argv, env, settings.data_dir.parent / "web.log")
    started.append(await process.start())
    await web_answers(settings.web_port, within=STARTUP)
    return process


def _open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line in /proc/<pid>/limits")


async def test_a_process_full_of_streams_still_answers_health(
    settings: Settings, started: list[Process]
) -> None:
    web = await _web(settings, started, soft=256, hard=4096)
    soft, hard = await asyncio.to_thread(_open_files_limit, web.pid)
    assert (soft, hard) == (4096, 4096)

    async with aiohttp.ClientSession(
        f"http://127.0.0.1:{settings.web_port}",
        headers=AUTH_HEADERS,
        connector=aiohttp.TCPConnector(limit=0),  # every stream holds its own connection
        timeout=aiohttp.ClientTimeout(total=60),
    ) as http:
        streams = []
        try:
            for _ in range(STREAMS):
                stream = await http.get("/dashboard/events")
                assert stream.status == 200, await stream.text()
                streams.append(stream)
            refused = await http.get("/dashboard/events")
            assert refused.status == 429
            assert "in this process" in (await refused.json())["error"]
            async with http.get("/health") as health:
                assert health.status == 200
        finally:
            for stream in streams:
                stream.close()


async def test_a_hard_limit_below_what_the_caps_need_is_said_at_start(
    settings: Settings, started: list[Process]
) -> None:
    web = await _web(settings, started, soft=256, hard=300)
    assert await asyncio.to_thread(_open_files_limit, web.pid) == (300, 300)
    assert needed(settings.model_copy(update={"live_streams_per_process": STREAMS})) > 300
    log = await web.output()
    assert "open files" in log
    assert "LIVE_STREAMS_PER_PROCESS" in log
