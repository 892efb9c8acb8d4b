"""One storage suite, run against both backends: DATA_DIR's folders and a real S3 API server.

The S3 server is moto's, started on loopback by the tests (tests/s3_server.py), checking
every request's signature. Each test gets a fresh bucket and stores under a prefix, so
"nothing outside the prefix" is checked against a bucket that holds other things too. What a
test finds is read from outside the service's storage code: plain file calls, or boto3.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import math
import os
import re
import stat
import subprocess
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from PIL import Image

from service.store.storage import REPORTS, UPLOADS, open_storage
from service.worker.resources import open_resources
from settings import Settings
from tests import files
from tests.conftest import (
    AUTH_HEADERS,
    ClientFactory,
    RunWorker,
    queued,
    status_of,
)
from tests.days import RECENT_DAY
from tests.images import image_bytes
from tests.s3_server import MotoServer
from tests.storage_backends import PREFIX, Backend, s3_settings
from tests.waiting import wait_until
from web import create_app

STORED_NAME = re.compile(r"[0-9a-f]{32}\.(jpg|png|gif|webp)")
SMALL_LIMIT = 50_000


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, settings: Settings) -> Backend:
    if request.param == "local":
        return Backend.local(settings)
    return Backend.s3(settings, request.getfixturevalue("moto_server"))


@pytest.fixture
async def files_client(
    aiohttp_client: ClientFactory, backend: Backend, redis: ArqRedis
) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(backend.settings), headers=AUTH_HEADERS)


async def post_image(client: TestClient[Any, Any], data: bytes) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    # a file object, as big bodies should be sent (aiohttp warns about megabytes of bytes)
    form.add_field("file", io.BytesIO(data), filename="photo.jpg", content_type="image/jpeg")
    response: aiohttp.ClientResponse = await client.post("/upload", data=form)
    return response


async def upload_ok(client: TestClient[Any, Any], data: bytes) -> str:
    response = await post_image(client, data)
    assert response.status == 202, await response.text()
    task_id: str = (await response.json())["task_id"]
    return task_id


def _decoded(data: bytes) -> tuple[str | None, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.format, image.size


async def test_upload_is_stored_and_a_real_worker_stores_its_thumbnail_beside_it(
    backend: Backend, files_client: TestClient[Any, Any], run_worker: RunWorker
) -> None:
    data = image_bytes((1600, 1200), "PNG")
    task_id = await upload_ok(files_client, data)
    [name] = await backend.names(UPLOADS)
    assert STORED_NAME.fullmatch(name)
    assert name.endswith(".png"), "the stored name follows the content, not the client's name"
    assert await backend.read(UPLOADS, name) == data

    await run_worker(backend.settings)

    thumb = name.replace(".png", "_thumb.png")
    done = await status_of(files_client, task_id)
    assert done["status"] == "SUCCESS", done
    assert done["result"] == {"thumbnail": thumb, "width": 800, "height": 600}
    assert await backend.names(UPLOADS) == sorted([name, thumb])
    assert await asyncio.to_thread(_decoded, await backend.read(UPLOADS, thumb)) == (
        "PNG",
        (800, 600),
    )
    assert await backend.read(UPLOADS, name) == data, "the upload is left as it was"
    assert await backend.temporary_files() == [], "no temporary file outlives the job"
    if backend.kind == "s3":
        assert await backend.all_keys() == sorted(f"{PREFIX}/uploads/{n}" for n in (name, thumb))
    else:  # the upload's and the thumbnail's mode: what the process umask gives a new file
        umask = os.umask(0o022)
        os.umask(umask)
        modes = [
            stat.S_IMODE(
                (await asyncio.to_thread(os.stat, backend.settings.uploads_dir / n)).st_mode
            )
            for n in (name, thumb)
        ]
        assert modes == [0o666 & ~umask] * 2


def _bomb() -> bytes:
    out = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(out, format="PNG")  # 400 MP in ~50 KB
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (image_bytes((600, 400)) + bytes(SMALL_LIMIT), 413, "larger than the 50000-byte limit"),
        (b"GIF89a? not really" * 100, 415, "unsupported file type"),
        (_bomb(), 413, "image dimensions are too large"),
        (b"", 400, "empty"),
    ],
    ids=["too-large", "not-an-image", "too-many-pixels", "empty"],
)
async def test_a_refused_upload_leaves_nothing_anywhere(
    backend: Backend,
    aiohttp_client: ClientFactory,
    redis: ArqRedis,
    data: bytes,
    status: int,
    reason: str,
) -> None:
    small = backend.settings.model_copy(update={"max_upload_bytes": SMALL_LIMIT})
    client = await aiohttp_client(create_app(small), headers=AUTH_HEADERS)
    await upload_ok(client, image_bytes((60, 40)))  # the door works: this one is kept
    [kept] = await backend.names(UPLOADS)

    response = await post_image(client, data)

    assert response.status == status, await response.text()
    assert reason in (await response.json())["error"]
    assert await backend.names(UPLOADS) == [kept]
    assert await backend.temporary_files() == []
    assert len(await queued(redis, small)) == 1
    if backend.kind == "s3":
        assert await backend.all_keys() == [f"{PREFIX}/uploads/{kept}"]


async def test_an_upload_whose_job_cannot_be_queued_is_deleted_again(
    backend: Backend,
    aiohttp_client: ClientFactory,
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, redis_server = private_redis
    settings = backend.settings.model_copy(
        update={"redis_url": url, "rate_limit_per_token": "", "redis_socket_timeout": 1}
    )
    client = await aiohttp_client(create_app(settings), headers=AUTH_HEADERS)
    redis_server.kill()  # the app is up; from now on every enqueue fails
    await asyncio.to_thread(redis_server.wait)

    response = await post_image(client, image_bytes((300, 200)))

    assert response.status == 503, await response.text()
    assert "job queue is unavailable" in (await response.json())["error"]
    assert await backend.names(UPLOADS) == [], "no object may stay without its job"
    assert await backend.temporary_files() == []


async def _cutoff_after(backend: Backend) -> float:
    """A time after every object planted so far and before any planted next.

    Locally files are dated by hand (31 days old); S3 dates objects itself, to the second,
    so the clock must pass the next whole second before the next objects are made.
    """
    if backend.kind == "local":
        return time.time() - 30 * 86_400
    cutoff = time.time()

    async def next_second() -> bool:
        return time.time() >= math.ceil(cutoff) + 0.01

    await wait_until(next_second, within=3)
    return cutoff


async def test_cleanup_goes_page_by_page_and_deletes_only_old_objects_directly_in_uploads(
    backend: Backend,
) -> None:
    old = [f"{uuid.uuid4().hex}.jpg" for _ in range(12)]
    for name in [*old, ".incoming-crashed"]:
        await backend.plant(UPLOADS, name, b"old", age_days=31)
    await backend.plant(REPORTS, "2026-01-01.json", b"{}", age_days=90)
    if backend.kind == "s3":
        outside = [
            f"{PREFIX}/uploads/nested/deep.jpg",  # "below" the area: not entered
            f"{PREFIX}/uploads-other/old.jpg",  # a sibling that starts the same
            f"{PREFIX}x/uploads/old.jpg",
            "uploads/old.jpg",  # the same area without the prefix
        ]
        for key in outside:
            await backend.put_key(key, b"keep")
        # a transfer's temporary file that a killed worker left behind
        stale = backend.settings.data_dir / "tmp" / ".download-killed.jpg"
        await files.write_bytes(stale, b"half")
        await asyncio.to_thread(os.utime, stale, (0, 0))
    else:
        data = backend.settings.data_dir
        await backend.plant(UPLOADS, "nested/deep.jpg", b"keep", age_days=90)

        def link_outside() -> None:
            (data / "outside.txt").write_text("keep me")
            (data / UPLOADS / "link.jpg").symlink_to(data / "outside.txt")

        await asyncio.to_thread(link_outside)
    cutoff = await _cutoff_after(backend)
    fresh = sorted(f"{uuid.uuid4().hex}_thumb.jpg" for _ in range(3))
    for name in fresh:
        await backend.plant(UPLOADS, name, b"fresh")

    storage = await open_storage(backend.settings, list_page_size=5)  # 16 keys: 4 pages
    try:
        deleted = await storage.delete_older_than(UPLOADS, cutoff)
    finally:
        await storage.close()

    # every page was listed: 12 old uploads, a stale ".incoming-" file (and in S3 a stale
    # download under DATA_DIR/tmp)
    assert deleted == (13 if backend.kind == "local" else 14)
    assert await backend.names(REPORTS) == ["2026-01-01.json"]
    if backend.kind == "s3":
        assert await backend.temporary_files() == []
        assert await backend.names(UPLOADS) == fresh
        expected = [f"{PREFIX}/reports/2026-01-01.json", *outside]
        expected += [f"{PREFIX}/uploads/{name}" for name in fresh]
        assert await backend.all_keys() == sorted(expected)
    else:
        assert await backend.names(UPLOADS) == sorted([*fresh, "link.jpg", "nested"])
        deep = backend.settings.uploads_dir / "nested" / "deep.jpg"
        assert await asyncio.to_thread(deep.exists)
        outside_file = backend.settings.data_dir / "outside.txt"
        assert await asyncio.to_thread(outside_file.read_text) == "keep me"


async def test_the_cleanup_cron_job_deletes_old_uploads_through_storage(
    backend: Backend, redis: ArqRedis, run_worker: RunWorker, files_client: TestClient[Any, Any]
) -> None:
    for name in ("a.jpg", "a_thumb.jpg"):
        await backend.plant(UPLOADS, name, b"x", age_days=31)
    await backend.plant(REPORTS, "old.json", b"{}", age_days=31)
    settings = backend.settings
    if backend.kind == "s3":  # objects cannot be back-dated: make "old" one second
        await _cutoff_after(backend)
        settings = settings.model_copy(update={"cleanup_max_age_days": 1 / 86_400})
    job = await redis.enqueue_job("cleanup_old_files")
    assert job is not None

    await run_worker(settings)

    done = await status_of(files_client, job.job_id)
    assert done["status"] == "SUCCESS", done
    assert done["result"] == {"deleted": 2}
    assert await backend.names(UPLOADS) == []
    assert await backend.names(REPORTS) == ["old.json"]


async def test_the_dashboard_streams_a_thumbnail_from_storage_without_holding_it(
    backend: Backend, files_client: TestClient[Any, Any]
) -> None:
    name = f"{uuid.uuid4().hex}_thumb.jpg"
    big = os.urandom(8 * 1024 * 1024)  # far larger than a thumbnail: a copy would show
    await backend.plant(UPLOADS, name, big)
    want = hashlib.sha256(big).hexdigest()
    del big

    tracemalloc.start()
    try:
        response = await files_client.get(f"/dashboard/thumbnails/{name}")
        assert response.status == 200
        digest = hashlib.sha256()
        async for chunk in response.content.iter_chunked(64 * 1024):
            digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert digest.hexdigest() == want
    assert response.content_type == "image/jpeg"
    assert response.headers["Content-Length"] == str(8 * 1024 * 1024)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert peak < 3 * 1024 * 1024, f"{peak} bytes at once while serving 8 MiB: a whole copy"
    missing = await files_client.get(f"/dashboard/thumbnails/{uuid.uuid4().hex}_thumb.jpg")
    assert missing.status == 404


def _noisy_jpeg(size: tuple[int, int]) -> bytes:
    """A photo-sized JPEG that compresses badly: megabytes, as a phone's are."""
    image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


async def test_the_thumbnail_job_never_holds_the_upload_whole_in_python_memory(
    backend: Backend, files_client: TestClient[Any, Any], run_worker: RunWorker
) -> None:
    """Python's allocations while the job runs stay far below the upload's size: in S3 the
    upload is downloaded chunk by chunk to a file that Pillow reads (Pillow's own pixel
    buffers are not Python objects; README "File storage" has the process's RSS)."""
    data = await asyncio.to_thread(_noisy_jpeg, (3000, 2000))
    assert len(data) > 4 * 1024 * 1024
    task_id = await upload_ok(files_client, data)
    del data
    service_startup = open_resources(backend.settings)
    started_with = 0

    async def startup_then_measure(ctx: dict[str, Any]) -> None:
        nonlocal started_with
        await service_startup(ctx)
        # botocore's S3 model, loaded at start and kept, is megabytes of dicts: not the job's
        tracemalloc.reset_peak()
        started_with = tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    try:
        await run_worker(backend.settings, on_startup=startup_then_measure)
        peak = tracemalloc.get_traced_memory()[1] - started_with
    finally:
        tracemalloc.stop()

    done = await status_of(files_client, task_id)
    assert done["status"] == "SUCCESS", done
    assert peak < 2 * 1024 * 1024, f"{peak} bytes at once for a 4+ MiB upload"


async def test_reports_are_written_through_storage(
    backend: Backend, files_client: TestClient[Any, Any], run_worker: RunWorker
) -> None:
    response = await files_client.post("/reports/daily", json={"day": RECENT_DAY})
    assert response.status == 202
    task_id = (await response.json())["task_id"]

    await run_worker(backend.settings)

    done = await status_of(files_client, task_id)
    assert done["status"] == "SUCCESS", done
    assert done["result"] == {"path": f"reports/{RECENT_DAY}.json", "date": RECENT_DAY}
    assert await backend.names(REPORTS) == [f"{RECENT_DAY}.json"]
    report = json.loads(await backend.read(REPORTS, f"{RECENT_DAY}.json"))
    assert report["date"] == RECENT_DAY
    assert await backend.temporary_files() == []


@pytest.fixture
def own_moto(tmp_path: Path) -> Iterator[MotoServer]:
    """A server of this test's own, so it can be stopped without harming the others."""
    server = MotoServer(tmp_path / "own-moto.log").start()
    try:
        yield server
    finally:
        server.stop()


async def test_s3_stopped_mid_run_retries_jobs_answers_503_and_leaves_nothing_behind(
    settings: Settings,
    own_moto: MotoServer,
    aiohttp_client: ClientFactory,
    redis: ArqRedis,
    run_worker: RunWorker,
) -> None:
    bucket = await asyncio.to_thread(own_moto.new_bucket)
    s3 = s3_settings(settings, own_moto, f"s3://{bucket}/{PREFIX}")
    backend = Backend("s3", s3, own_moto, bucket)
    client = await aiohttp_client(create_app(s3), headers=AUTH_HEADERS)
    accepted = await upload_ok(client, image_bytes((640, 480)))
    healthy = await (await client.get("/health")).json()
    assert healthy["dependencies"]["storage"] == "ok"
    service_startup = open_resources(s3)

    async def start_then_lose_storage(ctx: dict[str, Any]) -> None:
        await service_startup(ctx)  # the worker checks storage as it starts: still there
        await asyncio.to_thread(own_moto.stop)

    await run_worker(s3, on_startup=start_then_lose_storage)

    failed = await status_of(client, accepted)
    assert [attempt["outcome"] for attempt in failed["history"]] == ["retry", "retry", "failure"]
    assert "file storage unavailable" in failed["history"][0]["error"]
    assert "file storage unavailable" in failed["error"]
    assert own_moto.endpoint.split("//")[1] not in str(failed), "no internal address (issue 14.5)"

    refused = await post_image(client, image_bytes((640, 480)))
    assert refused.status == 503, await refused.text()
    assert refused.headers["Retry-After"] == "5"
    assert (await refused.json())["error"] == "file storage is unavailable, try again shortly"
    assert await backend.temporary_files() == [], "no temporary file of the job or the upload"
    assert await queued(redis, s3) == [], "no job for the refused upload"
    health = await client.get("/health")
    assert health.status == 200
    body = await health.json()
    assert (body["status"], body["dependencies"]["storage"]) == ("degraded", "unreachable")


async def test_an_unusable_storage_stops_start_up_naming_the_setting(
    settings: Settings, moto_server: MotoServer
) -> None:
    """The in-process view of the start-up check; tests/faults/test_storage_startup.py runs
    the real commands."""
    bad = s3_settings(settings, moto_server, "s3://no-such-bucket-here/x")
    with pytest.raises(SystemExit, match="there is no bucket named 'no-such-bucket-here'"):
        await open_storage(bad)
