"""REDIS_SENTINEL_PASSWORD and REDIS_URL's password, against sentinels and servers requiring them.

The reference deployment (deploy/env/common.env) protects both: the sentinels with a password
of their own, the master and its replica with REDIS_URL's. A real master, a replica and three
sentinels set up that way (tests/faults/sentinels.py); every client of the service must give
each its password, and use REDIS_URL's database: the web app's pool, the worker, and ``arq
service.WorkerSettings --check`` (a process). With the sentinels' password wrong, the check
finds no master and says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from service.engine.arq_api import health_check_key_suffix
from settings import Settings
from tests.conftest import TEST_API_TOKEN, RunWorker, SmtpRecorder, accepted_task, status_of
from tests.faults.conftest import Spawn, running_sentinels
from tests.faults.sentinels import MASTER_NAME, SentinelGroup

PASSWORD = "data-secret"  # the master's and the replica's (REDIS_URL's)
SENTINEL_PASSWORD = "sentinel-secret"  # the sentinels' own (REDIS_SENTINEL_PASSWORD)
DATABASE = 3  # REDIS_URL's, not the default 0
EMAIL = {"to": "ann@example.com", "subject": "Past two passwords", "body": "hi"}
CHECK_WITHIN = 30  # seconds for a --check process, Python's start-up included


@pytest.fixture
async def sentinel_group(tmp_path: Path) -> AsyncIterator[SentinelGroup]:
    async with running_sentinels(
        tmp_path, password=PASSWORD, sentinel_password=SENTINEL_PASSWORD
    ) as group:
        yield group


@pytest.fixture
def settings(tmp_path: Path, smtp_server: SmtpRecorder, sentinel_group: SentinelGroup) -> Settings:
    return Settings(
        # the password and database only: the sentinels say where the master is
        redis_url=f"redis://:{PASSWORD}@no-such-host.invalid/{DATABASE}",
        redis_sentinels=sentinel_group.addresses,
        redis_sentinel_master=MASTER_NAME,
        redis_sentinel_password=SENTINEL_PASSWORD,
        redis_socket_timeout=1,
        data_dir=tmp_path / "data",
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        api_tokens=(TEST_API_TOKEN,),
    )


async def test_every_client_gives_the_sentinels_and_the_master_their_passwords(
    client: TestClient[Any, Any],
    run_worker: RunWorker,
    settings: Settings,
    sentinel_group: SentinelGroup,
    smtp_server: SmtpRecorder,
    spawn: Spawn,
) -> None:
    task_id = await accepted_task(client, "/send-email", EMAIL)  # the web app's pool
    await run_worker()
    assert (await status_of(client, task_id))["status"] == "SUCCESS"
    assert [m.message["Subject"] for m in smtp_server.messages] == [EMAIL["subject"]]

    port = sentinel_group.master.port
    master = Redis(port=port, password=PASSWORD, db=DATABASE, socket_timeout=2)
    default = Redis(port=port, password=PASSWORD, socket_timeout=2)
    try:  # what the web app and the worker wrote is in REDIS_URL's database, none in db 0
        assert await master.dbsize() > 0
        assert await default.dbsize() == 0
        await master.psetex(settings.queue_name + health_check_key_suffix, 60_000, "alive")
    finally:
        await master.aclose()
        await default.aclose()
    check = await spawn("worker", "--check")
    assert await check.wait(within=CHECK_WITHIN) == 0, await check.output()

    refused = await spawn("worker", "--check", redis_sentinel_password="not-the-password")
    assert await refused.wait(within=CHECK_WITHIN) == 1
    output = await refused.output()
    assert "Health check failed: Redis unreachable" in output, output
    assert "Traceback" not in output, output
