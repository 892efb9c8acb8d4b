"""A full disk (a real ENOSPC, from a tiny tmpfs) while writing a thumbnail or a report.

Mounting needs root (CAP_SYS_ADMIN); elsewhere the test is skipped and says why, rather than
faking the error.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from settings import Settings
from tests import files
from tests.conftest import AUTH_HEADERS, ClientFactory, RunWorker, status_of
from tests.images import image_bytes
from web import create_app

FILLER = "filler.bin"


def _mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.decode().strip()}")


def _fill(folder: Path) -> None:
    """Write until the file system refuses: from here on, any write there gets ENOSPC."""
    with (folder / FILLER).open("wb", buffering=0) as out:
        for chunk in (b"\0" * 65536, b"\0"):  # big writes, then the last partial page
            with pytest.raises(OSError, match="No space left") as refused:  # noqa: PT012
                while True:
                    out.write(chunk)
            assert refused.value.errno == errno.ENOSPC


@pytest.fixture
def small_disks(settings: Settings) -> Iterator[None]:
    """The uploads and reports folders each on a 1 MiB file system of their own."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to get a real ENOSPC needs root")
    mounted: list[Path] = []
    try:
        for folder in (settings.uploads_dir, settings.reports_dir):
            _mount_tmpfs(folder, "1m")
            mounted.append(folder)
        yield
    finally:
        for folder in mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


async def test_full_disk_fails_the_thumbnail_and_the_report_and_leaves_no_partial_file(
    small_disks: None,
    settings: Settings,
    aiohttp_client: ClientFactory,
    run_worker: RunWorker,
) -> None:
    client = await aiohttp_client(create_app(settings), headers=AUTH_HEADERS)
    form = aiohttp.FormData()
    form.add_field("file", image_bytes(), filename="photo.jpg", content_type="image/jpeg")
    upload = await client.post("/upload", data=form)
    assert upload.status == 202, await upload.text()
    image_task = (await upload.json())["task_id"]
    report = await client.post("/reports/daily", json={"day": "2026-11-23"})
    assert report.status == 202
    report_task = (await report.json())["task_id"]
    uploads_before = await files.names_in(settings.uploads_dir)
    await asyncio.to_thread(_fill, settings.uploads_dir)
    await asyncio.to_thread(_fill, settings.reports_dir)

    await run_worker()

    image: dict[str, Any] = await status_of(client, image_task)
    assert image["status"] == "FAILURE"
    assert "No space left on device" in image["error"]
    assert await files.names_in(settings.uploads_dir) == sorted([*uploads_before, FILLER]), (
        "no thumbnail and no temporary file may be left"
    )
    daily: dict[str, Any] = await status_of(client, report_task)
    assert daily["status"] == "FAILURE"
    assert "could not write the report: No space left on device" in daily["error"]
    assert await files.names_in(settings.reports_dir) == [FILLER]
