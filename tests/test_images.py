"""process_image end to end: multipart upload -> uploads folder -> Redis -> real worker -> status.

Every image is a real file made with Pillow; every check on the result opens it with Pillow.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from arq.jobs import Job
from blockbuster import BlockingError
from PIL import Image

from jobs.thumbnails import make_thumbnail
from service.store.serialization import deserialize
from settings import Settings
from tests import files
from tests.conftest import (
    AUTH_HEADERS,
    ClientFactory,
    RunWorker,
    assert_refused,
    queued,
    status_of,
)
from tests.images import image_bytes
from web import create_app

EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp"}
STORED_NAME = re.compile(r"[0-9a-f]{32}\.(jpg|png|gif|webp)")
SMALL_LIMIT = 50_000


class Decoded(NamedTuple):
    format: str | None
    size: tuple[int, int]
    orientation: int  # the EXIF tag, 1 when absent


def _decode(path: Path) -> Decoded:
    with Image.open(path) as image:
        image.load()  # the whole file decodes, not just its header
        return Decoded(image.format, image.size, image.getexif().get(0x0112, 1))


async def decoded(path: Path) -> Decoded:
    """The image at ``path``, decoded in full (in a thread, as the worker does)."""
    return await asyncio.to_thread(_decode, path)


async def tree(root: Path) -> set[Path]:
    return await asyncio.to_thread(lambda: {path.relative_to(root) for path in root.rglob("*")})


def _stray_thumbnails(root: Path) -> list[Path]:
    found = list(root.rglob("*_thumb*"))
    return found + [path for path in [Path("/etc/passwd_thumb")] if path.exists()]


async def stray_thumbnails(root: Path) -> list[Path]:
    """Thumbnails anywhere under ``root``, and one beside /etc/passwd if a job made it."""
    return await asyncio.to_thread(_stray_thumbnails, root)


def millis(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() * 1000


def padded(data: bytes, size: int) -> bytes:
    """A real image followed by zero bytes up to ``size``: still identified by Pillow."""
    assert len(data) <= size
    return data + bytes(size - len(data))


async def post_file(
    client: TestClient[Any, Any],
    data: bytes,
    *,
    filename: str = "photo.jpg",
    content_type: str = "image/jpeg",
    field: str = "file",
) -> ClientResponse:
    form = aiohttp.FormData()
    form.add_field(field, data, filename=filename, content_type=content_type)
    response: ClientResponse = await client.post("/upload", data=form)
    return response


async def upload_ok(client: TestClient[Any, Any], data: bytes, **kwargs: str) -> str:
    """Upload ``data``, check the 202 answer and return the task id."""
    response = await post_file(client, data, **kwargs)
    assert response.status == 202, await response.text()
    body = await response.json()
    assert body["message"] == "Image uploaded, processing..."
    task_id: str = body["task_id"]
    assert response.headers["Location"] == f"/task-status/{task_id}"
    return task_id


async def upload_of(redis: ArqRedis, task_id: str) -> str:
    """The upload name a queued process_image job will read."""
    info = await Job(task_id, redis, _deserializer=deserialize).info()
    assert info is not None
    assert info.function == "process_image"
    name: str = info.kwargs["upload"]
    return name


async def enqueue_upload(redis: ArqRedis, upload: str) -> str:
    job = await redis.enqueue_job("process_image", upload=upload)
    assert job is not None
    return job.job_id


async def assert_rejected(
    response: ClientResponse, status: int, reason: str, redis: ArqRedis, settings: Settings
) -> None:
    await assert_refused(response, status, reason, redis, settings)
    left = await files.names_in(settings.uploads_dir)
    assert left == [], "a rejected upload must leave nothing on disk"


@pytest.fixture
async def small_client(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> TestClient[Any, Any]:
    small = settings.model_copy(update={"max_upload_bytes": SMALL_LIMIT})
    return await aiohttp_client(create_app(small), headers=AUTH_HEADERS)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "GIF", "WEBP"])
async def test_upload_is_stored_queued_and_thumbnailed(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
    image_format: str,
) -> None:
    data = image_bytes((1600, 1200), image_format)
    extension = EXTENSIONS[image_format]
    # The client's name and type say "BMP"; the stored name must follow the bytes instead.
    task_id = await upload_ok(client, data, filename="My Holiday.bmp", content_type="image/bmp")

    stored = await files.names_in(settings.uploads_dir)
    assert len(stored) == 1
    name = stored[0]
    assert STORED_NAME.fullmatch(name)
    assert name.endswith(extension)
    assert await files.read_bytes(settings.uploads_dir / name) == data
    assert await queued(redis, settings) == [task_id]
    assert await upload_of(redis, task_id) == name
    pending = await status_of(client, task_id)
    assert pending["status"] == "PENDING"
    assert pending["function"] == "process_image"

    await run_worker()

    thumb_name = f"{name.removesuffix(extension)}_thumb{extension}"
    done = await status_of(client, task_id)
    assert done["status"] == "SUCCESS"
    assert done["attempts"] == 1
    assert done["result"] == {"thumbnail": thumb_name, "width": 800, "height": 600}
    thumb = await decoded(settings.uploads_dir / thumb_name)
    assert thumb.format == image_format
    assert thumb.size == (800, 600)
    # Only the upload and its thumbnail: no ".tmp-" or ".incoming-" leftovers.
    assert await files.names_in(settings.uploads_dir) == sorted([name, thumb_name])
    upload = await files.read_bytes(settings.uploads_dir / name)
    assert upload == data, "the upload is left as it was"


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1200, 1600), (600, 800)),
        ((2000, 500), (800, 200)),
        ((300, 200), (300, 200)),
        ((800, 800), (800, 800)),
    ],
    ids=["portrait", "wide", "small-is-not-enlarged", "exactly-800"],
)
async def test_thumbnail_fits_800_keeps_aspect_and_never_enlarges(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    size: tuple[int, int],
    expected: tuple[int, int],
) -> None:
    task_id = await upload_ok(client, image_bytes(size, "PNG"))

    await run_worker()

    done = await status_of(client, task_id)
    assert done["status"] == "SUCCESS"
    assert (done["result"]["width"], done["result"]["height"]) == expected
    thumb = await decoded(settings.uploads_dir / done["result"]["thumbnail"])
    assert thumb.size == expected


async def test_thumbnail_follows_the_photos_exif_orientation(
    client: TestClient[Any, Any], settings: Settings, run_worker: RunWorker
) -> None:
    # Phones store portrait shots as landscape pixels plus "rotate 90°" (orientation 6).
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    Image.new("RGB", (1600, 1200), (10, 120, 200)).save(out, format="JPEG", exif=exif)
    task_id = await upload_ok(client, out.getvalue())

    await run_worker()

    done = await status_of(client, task_id)
    assert (done["result"]["width"], done["result"]["height"]) == (600, 800)
    thumb = await decoded(settings.uploads_dir / done["result"]["thumbnail"])
    assert thumb.size == (600, 800)
    assert thumb.orientation == 1, "the rotation is applied, not left as a tag"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"just some text, not a picture\n" * 20, "image/jpeg"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "image/jpeg"),
        (image_bytes((64, 64), "BMP"), "image/jpeg"),  # an image, but not an allowed format
        (image_bytes((64, 64), "JPEG")[:40], "image/jpeg"),  # too little to even identify
    ],
    ids=["text", "pdf", "bmp", "jpeg-header-only"],
)
async def test_not_an_allowed_image_is_415(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    data: bytes,
    content_type: str,
) -> None:
    response = await post_file(client, data, filename="photo.jpg", content_type=content_type)
    await assert_rejected(response, 415, "unsupported file type", redis, settings)


@pytest.mark.parametrize(
    "filename",
    [
        f"../../etc/{uuid.uuid4().hex}.jpg",
        f"/abs/{uuid.uuid4().hex}.jpg",
        f"..\\..\\{uuid.uuid4().hex}.jpg",
        "../uploads/../app.db",
        "",
    ],
    ids=["relative-traversal", "absolute", "windows-traversal", "points-at-database", "empty"],
)
async def test_client_filename_is_never_used_as_a_path(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    tmp_path: Path,
    filename: str,
) -> None:
    data = image_bytes((320, 240), "JPEG")
    before = await tree(tmp_path)

    task_id = await upload_ok(client, data, filename=filename)

    stored = await files.names_in(settings.uploads_dir)
    assert len(stored) == 1
    assert STORED_NAME.fullmatch(stored[0])
    after = await tree(tmp_path)
    assert after - before == {settings.uploads_dir.relative_to(tmp_path) / stored[0]}
    assert before <= after, "nothing may be replaced or removed either"
    leaf = Path(filename.replace("\\", "/")).name
    if leaf:
        assert not await files.exists(tmp_path / "etc")
        assert not await files.exists(Path("/etc") / leaf)
        assert not await files.exists(Path("/abs") / leaf)
    assert await upload_of(redis, task_id) == stored[0]


@pytest.mark.parametrize(
    "size",
    [SMALL_LIMIT + 1, 4 * SMALL_LIMIT],
    ids=["just-over-checked-while-streaming", "far-over-checked-by-content-length"],
)
async def test_upload_over_the_limit_is_413(
    small_client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, size: int
) -> None:
    data = padded(image_bytes((320, 240), "JPEG"), size)
    response = await post_file(small_client, data)
    await assert_rejected(response, 413, f"{SMALL_LIMIT}-byte limit", redis, settings)


async def test_upload_of_exactly_the_limit_is_accepted(
    small_client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    task_id = await upload_ok(small_client, padded(image_bytes((320, 240), "JPEG"), SMALL_LIMIT))
    assert len(await files.names_in(settings.uploads_dir)) == 1
    assert await queued(redis, settings) == [task_id]


async def test_missing_file_field_is_400(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    response = await post_file(client, image_bytes((64, 64), "JPEG"), field="image")
    await assert_rejected(response, 400, "multipart field 'file' is required", redis, settings)


async def test_multipart_without_any_part_is_400(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    boundary = "empty-boundary"
    response = await client.post(
        "/upload",
        data=f"--{boundary}--\r\n".encode(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    await assert_rejected(response, 400, "multipart field 'file' is required", redis, settings)


async def test_json_body_is_400(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    response = await client.post("/upload", json={"file": "aGVsbG8="})
    await assert_rejected(response, 400, "multipart/form-data", redis, settings)


async def test_raw_image_body_is_400(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    response = await client.post(
        "/upload", data=image_bytes((64, 64), "JPEG"), headers={"Content-Type": "image/jpeg"}
    )
    await assert_rejected(response, 400, "multipart/form-data", redis, settings)


async def test_empty_file_is_400(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    response = await post_file(client, b"")
    await assert_rejected(response, 400, "the uploaded file is empty", redis, settings)


async def test_truncated_image_fails_cleanly_and_the_worker_goes_on(
    client: TestClient[Any, Any], settings: Settings, run_worker: RunWorker
) -> None:
    whole = image_bytes((1600, 1200), "JPEG")
    # Its header is intact, so the upload check (which only identifies the format) accepts it.
    bad_id = await upload_ok(client, whole[: len(whole) * 4 // 10])
    good_id = await upload_ok(client, whole)

    await run_worker()

    failed = await status_of(client, bad_id)
    assert failed["status"] == "FAILURE"
    assert failed["attempts"] == 1, "a corrupt file fails the same way every time: no retry"
    assert "could not make a thumbnail: image file is truncated" in failed["error"]
    assert str(settings.data_dir) not in failed["error"], "no server paths in client messages"
    done = await status_of(client, good_id)
    assert done["status"] == "SUCCESS"
    good_thumb = done["result"]["thumbnail"]
    # The two uploads and the good one's thumbnail: nothing partial, no temp files.
    names = await files.names_in(settings.uploads_dir)
    assert len(names) == 3
    assert good_thumb in names
    assert [name for name in names if "_thumb" in name] == [good_thumb]
    assert not [name for name in names if name.startswith(".")]


@pytest.mark.parametrize(
    "upload",
    ["../x.jpg", "/etc/passwd", "", ".", "..", "sub/x.jpg", "..\\x.jpg", "x.jpg\x00.png"],
)
async def test_job_refuses_upload_names_that_leave_the_folder(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
    tmp_path: Path,
    upload: str,
) -> None:
    # A real image where "../x.jpg" points, so only the name check can stop the job.
    await files.write_bytes(settings.data_dir / "x.jpg", image_bytes((320, 240), "JPEG"))
    task_id = await enqueue_upload(redis, upload)

    await run_worker()

    failed = await status_of(client, task_id)
    assert failed["status"] == "FAILURE"
    assert failed["attempts"] == 1
    assert "invalid upload name" in failed["error"]
    assert await stray_thumbnails(tmp_path) == []


async def test_job_for_a_missing_upload_fails_with_its_name(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, run_worker: RunWorker
) -> None:
    name = f"{uuid.uuid4().hex}.jpg"
    task_id = await enqueue_upload(redis, name)

    await run_worker()

    failed = await status_of(client, task_id)
    assert failed["status"] == "FAILURE"
    assert failed["attempts"] == 1
    assert f"upload {name!r} not found" in failed["error"]
    assert await files.names_in(settings.uploads_dir) == []


async def test_resizing_runs_off_the_event_loop(
    client: TestClient[Any, Any], settings: Settings, run_worker: RunWorker
) -> None:
    # JPEG's draft mode makes even 12 megapixels quick (~30 ms); a PNG must be decoded in full
    # (~100+ ms), long enough for a stalled loop to show in the heartbeat.
    big = [image_bytes((4000, 3000), "JPEG"), image_bytes((4000, 3000), "PNG")]
    ticks: list[float] = []

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(0.005)
            ticks.append(time.time() * 1000)

    # Besides, any blocking call made on the loop thread (file reads and writes, os.replace,
    # sleeps, lock waits ...) raises BlockingError (the blockbuster fixture, conftest.py), in
    # the upload handler as well as in the job.
    task_ids = [await upload_ok(client, data) for data in big]
    beating = asyncio.create_task(heartbeat())
    try:
        await run_worker()
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating

    statuses = [await status_of(client, task_id) for task_id in task_ids]
    assert [status["status"] for status in statuses] == ["SUCCESS", "SUCCESS"], statuses
    assert [(s["result"]["width"], s["result"]["height"]) for s in statuses] == [(800, 600)] * 2
    started = min(millis(status["started_at"]) for status in statuses)
    finished = max(millis(status["finished_at"]) for status in statuses)
    during = [tick for tick in ticks if started <= tick <= finished]
    assert len(during) >= 5, f"the loop ticked {len(during)} times in {finished - started} ms"


# Pillow does not close the file when its first read raises, as BlockingError makes it do here.
@pytest.mark.filterwarnings("ignore:unclosed file:ResourceWarning")
async def test_blockbuster_catches_pillow_work_on_the_loop(tmp_path: Path) -> None:
    """Guards the test above and the blockbuster fixture: Pillow's work on the loop is caught."""
    source = tmp_path / "photo.jpg"
    await files.write_bytes(source, image_bytes((1600, 1200), "JPEG"))
    with pytest.raises(BlockingError):
        make_thumbnail(source, tmp_path / "photo_thumb.jpg", 10**8)
    assert not await files.exists(tmp_path / "photo_thumb.jpg")


async def test_image_with_too_many_pixels_is_refused_at_the_door(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    # 400 megapixels in a 48 KB PNG: decoding it would take far more memory than the file's size.
    out = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(out, format="PNG")
    response = await post_file(client, out.getvalue(), filename="bomb.png")
    await assert_rejected(response, 413, "image dimensions are too large", redis, settings)
