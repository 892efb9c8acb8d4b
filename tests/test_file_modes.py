"""Every file the service writes gets the mode the process umask gives a new file.

A web server running as another user must be able to serve thumbnails and reports when the
umask says so; a temporary file made by mkstemp (0600) renamed into place would lock it out.
The test picks a umask (0o027: group may read, others nothing) that neither 0600 nor 0644
matches, and checks an upload, its thumbnail, a report and a file a job writes with
``write_atomically`` (service.runtime).
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.runtime import write_atomically
from settings import Settings
from tests.conftest import RunWorker, status_of
from tests.images import image_bytes
from tests.test_images import upload_ok

UMASK = 0o027
EXPECTED = 0o666 & ~UMASK  # 0o640


@pytest.fixture
def chosen_umask() -> Iterator[int]:
    previous = os.umask(UMASK)
    try:
        yield UMASK
    finally:
        os.umask(previous)


async def _mode(path: Path) -> int:
    return stat.S_IMODE((await asyncio.to_thread(os.stat, path)).st_mode)


async def test_uploads_thumbnails_reports_and_job_files_follow_the_umask(
    chosen_umask: int,
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
) -> None:
    image_task = await upload_ok(client, image_bytes((1600, 1200)))
    day = datetime.now(settings.timezone).date().isoformat()
    report = await client.post("/reports/daily", json={"day": day})
    assert report.status == 202
    await run_worker()
    thumbnail = (await status_of(client, image_task))["result"]["thumbnail"]
    upload = thumbnail.replace("_thumb", "")
    job_file = settings.data_dir / "made-by-a-job.json"
    await asyncio.to_thread(write_atomically, job_file, b"{}")

    modes = {
        "upload": await _mode(settings.uploads_dir / upload),
        "thumbnail": await _mode(settings.uploads_dir / thumbnail),
        "report": await _mode(settings.reports_dir / f"{day}.json"),
        "write_atomically": await _mode(job_file),
    }
    assert modes == dict.fromkeys(modes, EXPECTED), {k: oct(v) for k, v in modes.items()}
