"""Attacks on the inputs: image bombs, corrupt images, streamed oversize uploads, header injection.

Each test asserts the answer and that nothing was written, queued or sent. (Path traversal in
file names, text renamed .jpg, truncated JPEGs and oversize uploads with a Content-Length are in
test_images.py; header injection at the door in test_email.py and test_register.py.)
"""

from __future__ import annotations

import io
import uuid
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from PIL import Image

from jobs.thumbnails import ThumbnailError, configure_pillow, decode
from service.queue.enqueue import enqueue
from settings import Settings
from tests import files
from tests.conftest import (
    AUTH_HEADERS,
    ClientFactory,
    RunWorker,
    SmtpRecorder,
    assert_refused,
    queued,
    status_of,
)
from tests.images import image_bytes
from tests.test_images import assert_rejected, enqueue_upload, post_file, tree, upload_ok
from web import create_app


def png_bomb(width: int, height: int) -> bytes:
    """A tiny file that decodes to ``width * height`` pixels (1-bit PNG, deflated zeros)."""
    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, format="PNG")
    return out.getvalue()


# --- images -------------------------------------------------------------------------------


async def test_the_pixel_limit_is_a_setting_and_counts_at_the_door(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    own = settings.model_copy(update={"max_image_pixels": 1_000_000})
    client = await aiohttp_client(create_app(own), headers=AUTH_HEADERS)
    form_ok = await post_file(client, png_bomb(1000, 1000), filename="ok.png")
    assert form_ok.status == 202, await form_ok.text()
    (stored,) = await files.names_in(settings.uploads_dir)
    queued_before = await queued(redis, settings)

    response = await post_file(client, png_bomb(1001, 1000), filename="bomb.png")
    assert response.status == 413
    assert "over the 1000000-pixel limit" in (await response.json())["error"]
    assert await files.names_in(settings.uploads_dir) == [stored]
    assert await queued(redis, settings) == queued_before


async def test_a_bomb_under_pillows_own_limit_but_over_ours_is_refused(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    # 64 megapixels: over MAX_IMAGE_PIXELS (50 M) though under Pillow's default (89 M)
    assert (
        Image.MAX_IMAGE_PIXELS is None
        or Image.MAX_IMAGE_PIXELS > 64_000_000
        or settings.max_image_pixels < 64_000_000
    )
    response = await post_file(client, png_bomb(8000, 8000), filename="bomb.png")
    await assert_rejected(response, 413, "image dimensions are too large", redis, settings)


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        ((8000, 8000), "image dimensions are too large: 8000x8000"),  # over MAX_IMAGE_PIXELS
        ((20_000, 20_000), "decompression bomb"),  # 400 MP in ~50 KB: Pillow's own check
    ],
)
async def test_a_bomb_that_slips_past_the_door_fails_its_job_and_the_worker_goes_on(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
    size: tuple[int, int],
    reason: str,
) -> None:
    bomb = f"{uuid.uuid4().hex}.png"
    await files.write_bytes(settings.uploads_dir / bomb, png_bomb(*size))
    bomb_id = await enqueue_upload(redis, bomb)
    good_id = await upload_ok(client, image_bytes((1600, 1200), "JPEG"))

    await run_worker()

    failed = await status_of(client, bomb_id)
    assert failed["status"] == "FAILURE"
    assert failed["attempts"] == 1
    assert "image refused" in failed["error"]
    assert reason in failed["error"]
    assert str(settings.data_dir) not in failed["error"]
    assert (await status_of(client, good_id))["status"] == "SUCCESS"
    names = await files.names_in(settings.uploads_dir)
    assert not [name for name in names if name.startswith(bomb[:32] + "_")]


def test_pillows_decompression_bomb_warning_is_an_error_after_configure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between Pillow's limit and twice it, Pillow only warns; configured, that is a refusal."""
    source = tmp_path / "wide.png"
    source.write_bytes(png_bomb(40, 30))
    with warnings.catch_warnings():
        warnings.resetwarnings()  # as a fresh process starts: the warning would only be shown
        configure_pillow(10**9)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,200 px: in the warning zone
        with pytest.raises(ThumbnailError, match="image refused"):
            decode(source, max_pixels=10**9)


async def test_a_streamed_upload_without_content_length_is_cut_at_the_limit(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    limit = 50_000
    own = settings.model_copy(update={"max_upload_bytes": limit})
    client = await aiohttp_client(create_app(own), headers=AUTH_HEADERS)
    boundary = "x" + uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield head + image_bytes((64, 64), "JPEG")
        for _ in range(200):  # 200 x 8 KiB = 1.6 MB, far over the limit, never ending early
            sent += 8192
            yield bytes(8192)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = await client.post(
        "/upload",
        data=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    await assert_rejected(response, 413, f"{limit}-byte limit", redis, settings)
    assert "Content-Length" not in response.request_info.headers
    assert await files.names_in(settings.uploads_dir) == []


def field_part(boundary: str, name: str, value: bytes) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value
        + b"\r\n"
    )


async def test_a_huge_field_before_the_file_is_cut_at_the_limit(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    """A chunked body gives no Content-Length to check; a field nobody reads is budgeted too."""
    boundary = "f" + uuid.uuid4().hex
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\n'.encode()
        for _ in range(8000):  # 64 MB if read to the end
            sent += 8192
            yield b"n" * 8192
        yield b"\r\n" + raw_multipart(boundary, b"a.jpg", image_bytes((64, 48), "JPEG"))

    response = await client.post(
        "/upload",
        data=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    await assert_rejected(response, 413, "fields other than 'file'", redis, settings)
    assert sent < 32 * 1024 * 1024, "the server stopped reading long before the end"


async def test_small_fields_beside_the_file_are_fine(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    boundary = "s" + uuid.uuid4().hex
    data = field_part(boundary, "title", b"holiday") + raw_multipart(
        boundary, b"a.jpg", image_bytes((64, 48), "JPEG")
    )
    response = await client.post(
        "/upload", data=data, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status == 202, await response.text()
    assert len(await files.names_in(settings.uploads_dir)) == 1


def raw_multipart(boundary: str, filename: bytes, data: bytes) -> bytes:
    """A multipart body written by hand: client libraries refuse to send these names."""
    return (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\nContent-Type: image/jpeg\r\n\r\n'
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


@pytest.mark.parametrize(
    "filename",
    [b"x\x00.jpg", b"a.jpg\x00/../../../etc/passwd", b"\x00", b"../../\x00x.jpg"],
)
async def test_nul_bytes_in_the_file_name_are_400_and_change_nothing(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, filename: bytes
) -> None:
    root = settings.data_dir.parent
    before = await tree(root)
    boundary = "b" + uuid.uuid4().hex
    response = await client.post(
        "/upload",
        data=raw_multipart(boundary, filename, image_bytes((64, 48), "JPEG")),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    await assert_rejected(response, 400, "malformed request body", redis, settings)
    assert await tree(root) - before <= {settings.uploads_dir.relative_to(root)}


# --- email --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"to": "a@example.com", "subject": "Hi\u2028Bcc: x@example.com", "body": "x"}, "subject"),
        ({"to": "a@example.com", "subject": "Hi\x85Bcc: x@example.com", "body": "x"}, "subject"),
        ({"to": "a@example.com", "subject": "Hi\rBcc: x@example.com", "body": "x"}, "subject"),
        ({"to": "a@example.com", "subject": "Hi\x00", "body": "x"}, "subject"),
        ({"to": "a@example.com,b@example.com", "subject": "Hi", "body": "x"}, "to"),
        ({"to": "a@example.com\nBcc: b@example.com", "subject": "Hi", "body": "x"}, "to"),
        ({"to": "A <a@example.com>", "subject": "Hi", "body": "x"}, "to"),
        ({"to": "a@example.com", "subject": "Hi", "body": "x", "from": "ceo@bank.com"}, "from"),
        ({"to": "a@example.com", "subject": "Hi", "body": "x", "headers": {"Bcc": "b@x.y"}}, ""),
    ],
)
async def test_header_injection_at_the_door_is_400_and_sends_nothing(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    smtp_server: SmtpRecorder,
    payload: dict[str, Any],
    reason: str,
) -> None:
    response = await client.post("/send-email", json=payload)
    await assert_refused(response, 400, reason, redis, settings)
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"to": "a@example.com", "subject": "Hi\r\nBcc: victim@example.com"}, "subject"),
        ({"to": "a@example.com", "subject": "Hi\u2028Bcc: victim@example.com"}, "subject"),
        ({"to": "a@example.com\r\nBcc: victim@example.com", "subject": "Hi"}, "recipient"),
        ({"to": "a@example.com, victim@example.com", "subject": "Hi"}, "exactly one address"),
    ],
)
async def test_header_injection_in_a_job_that_skipped_the_door_fails_it_and_sends_nothing(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
    kwargs: dict[str, str],
    reason: str,
) -> None:
    task_id = await enqueue(redis, "send_email", {"body": "x", **kwargs})
    await run_worker()
    failed = await status_of(client, task_id)
    assert failed["status"] == "FAILURE"
    assert failed["attempts"] == 1
    assert reason in failed["error"]
    assert smtp_server.messages == []


async def test_the_sender_is_always_mail_from(
    client: TestClient[Any, Any], run_worker: RunWorker, smtp_server: SmtpRecorder
) -> None:
    response = await client.post(
        "/send-email", json={"to": "a@example.com", "subject": "Hi", "body": "From: ceo@bank.com"}
    )
    assert response.status == 202
    await run_worker()
    (mail,) = smtp_server.messages
    assert mail.sender == "jobs@example.com"
    assert mail.message["From"] == "Job Service <jobs@example.com>"
    assert mail.recipients == ["a@example.com"]
    assert mail.message.get_all("Bcc") is None


# --- errors -------------------------------------------------------------------------------


async def test_an_unexpected_error_answers_500_without_traceback_or_paths(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    async def broken(request: web.Request) -> web.Response:
        open(settings.data_dir / "secret" / "missing.txt").close()  # noqa: ASYNC230
        raise AssertionError("unreachable")

    app = create_app(settings)
    app.router.add_get("/broken", broken)
    client = await aiohttp_client(app, headers=AUTH_HEADERS)
    response = await client.get("/broken")
    assert response.status == 500
    assert await response.json() == {"error": "internal server error"}
    text = await response.text()
    assert "Traceback" not in text
    assert str(settings.data_dir) not in text
    assert response.headers["Server"] == "jobservice", "no Python/aiohttp versions"
