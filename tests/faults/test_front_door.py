"""``python -m web`` against raw sockets: requests its HTTP parser refuses, and clients that
send their head or body one byte at a time. Every answer is the service's own (its Server
header, a short JSON error), and a slow client is cut off at its time limit with nothing
stored, queued or left on disk."""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from PIL import Image
from redis.asyncio import Redis

from jobs.registry import REGISTRY
from service.store import keys
from settings import Settings
from tests.conftest import AUTH_HEADERS, TEST_API_TOKEN
from tests.faults.conftest import Spawn, web_answers
from tests.faults.processes import RedisServer
from tests.images import image_bytes

STARTUP = 30
HEAD_LIMIT = 2.0
BODY_LIMIT = 2.0
UPLOAD_LIMIT = 4.0  # MAX_UPLOAD_BYTES / UPLOAD_MIN_BYTES_PER_SECOND, above BODY_LIMIT
MAX_UPLOAD = 100_000
UPLOAD_RATE = MAX_UPLOAD / UPLOAD_LIMIT  # UPLOAD_MIN_BYTES_PER_SECOND: 25,000
LATE = 2.5  # seconds past its limit a cut-off may come on this loaded machine
DRIP = 0.25  # seconds between two bytes of a slow client
MARKER = "zqxjmarker"  # sent in malformed requests: never echoed back


@pytest.fixture
async def web(settings: Settings, spawn: Spawn) -> str:
    await spawn(
        "web",
        request_header_timeout=HEAD_LIMIT,
        request_body_timeout=BODY_LIMIT,
        max_upload_bytes=MAX_UPLOAD,
        upload_min_bytes_per_second=UPLOAD_RATE,
    )
    base = f"http://127.0.0.1:{settings.web_port}"
    await web_answers(settings.web_port, within=STARTUP)
    return base


@pytest.fixture
async def server(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url())
    yield client
    await client.aclose()


class Answer:
    """An HTTP answer read off a raw socket, and when the server closed it."""

    def __init__(self, raw: bytes, seconds: float, first: float) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1]) if lines[0] else 0
        self.headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        self.seconds = seconds  # until the server closed the connection
        self.first = first  # until the answer's first byte

    def error(self) -> str:
        assert self.headers["content-type"].startswith("application/json"), self.headers
        message: str = json.loads(self.body)["error"]
        return message


async def _exchange(
    port: int, head: bytes, drip: bytes = b"", *, within: float = 15.0, until_close: bool = True
) -> Answer:
    """Send ``head`` at once, then ``drip`` one byte per DRIP seconds until the server answers
    or closes; the answer, the seconds from connecting to the server closing (or to the end
    of the answer, when not ``until_close``) and to its first byte."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)

        async def dripping() -> None:
            for byte in drip:
                await asyncio.sleep(DRIP)
                writer.write(bytes([byte]))
                await writer.drain()

        sender = asyncio.create_task(dripping())
        try:
            async with asyncio.timeout(within):
                raw = await reader.read(1)
                first = time.monotonic() - started
                if until_close:
                    raw += await reader.read()
                else:  # the answer alone: its head, and its body by Content-Length
                    raw += await reader.readuntil(b"\r\n\r\n")
                    length = Answer(raw, 0, 0).headers["content-length"]
                    raw += await reader.readexactly(int(length))
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        return Answer(raw, time.monotonic() - started, first)
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


def _smuggled() -> bytes:
    """An email a client may send, framed by both Content-Length and chunked (the ground of
    request smuggling): were either framing believed, it would be queued."""
    email = json.dumps({"to": "ann@example.com", "subject": MARKER, "body": "x"}).encode()
    chunked = f"{len(email):x}\r\n".encode() + email + b"\r\n0\r\n\r\n"
    auth = "".join(f"{name}: {value}\r\n" for name, value in AUTH_HEADERS.items())
    return (
        f"POST /send-email HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
        f"Content-Length: {len(chunked)}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode() + chunked


MALFORMED = {
    "not HTTP at all": f"{MARKER} garbage\r\n\r\n".encode(),
    "a bad method": f"G{MARKER}ET( / HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "an unknown HTTP version": f"GET /{MARKER} HTTP/7.2\r\nHost: x\r\n\r\n".encode(),
    "a control byte in a header": f"GET / HTTP/1.1\r\nX-{MARKER}: a\x01b\r\n\r\n".encode(),
    "a header line without a colon": f"GET / HTTP/1.1\r\n{MARKER} no colon\r\n\r\n".encode(),
    "an oversized header": b"GET / HTTP/1.1\r\nX-Big: " + MARKER.encode() * 2000 + b"\r\n\r\n",
    "a TLS hello on the plain port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64,
    "both Content-Length and chunked": _smuggled(),
}


async def test_requests_the_parser_refuses_get_the_services_own_short_json_answer(
    web: str, settings: Settings, server: Redis
) -> None:
    for case, request in MALFORMED.items():
        answer = await _exchange(settings.web_port, request)
        assert 400 <= answer.status < 500, (case, answer.status)
        assert answer.headers.get("server") == "jobservice", (case, answer.headers)
        assert MARKER.encode() not in answer.body, case
        assert answer.error() == "malformed HTTP request", case
        assert len(answer.body) < 100, case
    assert await _queued(server, settings) == 0  # the smuggled email above included
    # a well-formed request still gets its usual answer afterwards
    async with aiohttp.ClientSession(web) as http, http.get("/health") as response:
        assert response.status == 200
        assert response.headers["Server"] == "jobservice"


async def test_a_head_sent_byte_by_byte_is_cut_off_at_its_limit(
    web: str, settings: Settings
) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\n"
    answer = await _exchange(settings.web_port, head, b"X-Slow: " + b"a" * 200)
    assert answer.status == 408
    assert answer.headers["server"] == "jobservice"
    assert "did not arrive within 2 s" in answer.error()
    assert HEAD_LIMIT <= answer.seconds < HEAD_LIMIT + LATE


def _sign_in_head(port: int, length: int) -> bytes:
    return (
        f"POST /dashboard/sign-in HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Origin: http://127.0.0.1:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


async def test_a_sign_in_body_sent_byte_by_byte_is_cut_off_and_opens_no_session(
    web: str, settings: Settings, server: Redis
) -> None:
    form = f"token={TEST_API_TOKEN}&next=/dashboard".encode()
    port = settings.web_port
    answer = await _exchange(port, _sign_in_head(port, len(form)), form)
    assert answer.status == 408
    assert "did not arrive within 2 s" in answer.error()
    assert BODY_LIMIT <= answer.seconds < BODY_LIMIT + LATE
    assert [key async for key in server.scan_iter(keys.session("*"))] == []


async def test_a_sign_in_body_too_large_or_over_the_rate_limit_is_refused_before_reading_it(
    web: str, settings: Settings
) -> None:
    port = settings.web_port
    # declared too large: 413 at once, though not one byte of the body was sent
    answer = await _exchange(port, _sign_in_head(port, 1_000_000), until_close=False)
    assert answer.status == 413
    assert "larger than 4096 bytes" in answer.error()
    assert answer.first < 1.5  # (aiohttp then reads what comes for 10 s at most, and closes)
    form = b"token=wrong-token-0123456789abcdef"
    for _ in range(10):  # the limit: 10 attempts a minute per address
        wrong = await _exchange(port, _sign_in_head(port, len(form)) + form)
        assert wrong.status == 403
    # over the limit: 429 at once, without waiting for a body that never comes
    answer = await _exchange(port, _sign_in_head(port, len(form)), until_close=False)
    assert answer.status == 429
    assert answer.first < 1.5


def _upload(image: bytes) -> bytes:
    """An authenticated ``POST /upload`` of ``image``: its head and its body."""
    boundary = "slowboundary"
    opening = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="photo"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = opening + image + f"\r\n--{boundary}--\r\n".encode()
    head = (
        f"POST /upload HTTP/1.1\r\nHost: x\r\n{_auth()}"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head + body


async def test_an_upload_sent_slowly_is_cut_off_and_leaves_nothing(
    web: str, settings: Settings, server: Redis
) -> None:
    request = _upload(image_bytes((400, 300)))  # about 8.3 KB
    start = request.index(b"\r\n\r\n") + 4
    # the first 8 KiB of the body at once (a temporary file is open by then), the rest dripping
    answer = await _exchange(settings.web_port, request[: start + 8192], request[start + 8192 :])
    assert answer.status == 408
    assert "slower than 25000 bytes a second" in answer.error()
    # its limit is BODY_LIMIT plus a second per UPLOAD_RATE bytes received: about 2.3 s, not
    # UPLOAD_LIMIT (4 s; by default 160 s, which a byte a second held whole before)
    paced = BODY_LIMIT + 8192 / UPLOAD_RATE
    assert paced <= answer.seconds < min(paced + LATE, UPLOAD_LIMIT), answer.seconds
    uploads = settings.data_dir / "uploads"
    assert await asyncio.to_thread(_files_in, uploads) == []  # no upload, no .incoming- file
    assert await _queued(server, settings) == 0


async def test_an_upload_that_keeps_the_minimum_rate_may_take_longer_than_a_form(
    web: str, settings: Settings, server: Redis
) -> None:
    noise = Image.frombytes("RGB", (170, 170), random.Random(7).randbytes(170 * 170 * 3))
    png = io.BytesIO()
    noise.save(png, format="PNG")  # incompressible: about 87 KB, under MAX_UPLOAD
    request = _upload(png.getvalue())
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", settings.web_port)
    try:
        for at in range(0, len(request), 8192):  # 32 KiB a second: above UPLOAD_RATE
            writer.write(request[at : at + 8192])
            await writer.drain()
            await asyncio.sleep(0.25)
        raw = await asyncio.wait_for(reader.read(), 15)
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)
    assert time.monotonic() - started > BODY_LIMIT, "it took longer than a form may"
    answer = Answer(raw, 0, 0)
    assert answer.status == 202, answer.body
    assert await _queued(server, settings) == 1


async def _queued(server: Redis, settings: Settings) -> int:
    """Jobs waiting in every queue and priority (a thumbnail waits in the images queue)."""
    return sum([await server.zcard(key) for key in REGISTRY.layout(settings).all_keys()])


def _auth() -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in AUTH_HEADERS.items())


def _files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


async def test_several_web_processes_under_gunicorn_answer_the_same(
    settings: Settings, spawn: Spawn
) -> None:
    # below gunicorn's keep-alive of 2 s, which also closes a connection still without a head
    await spawn("web", web_processes=2, request_header_timeout=1)
    await web_answers(settings.web_port, within=STARTUP)
    refused = await _exchange(settings.web_port, MALFORMED["a bad method"])
    assert refused.status == 400
    assert refused.headers["server"] == "jobservice"
    assert refused.error() == "malformed HTTP request"
    slow = await _exchange(settings.web_port, b"GET /health HTTP/1.1\r\n", b"X-Slow: a\r\n" * 20)
    assert slow.status == 408
    assert 1 <= slow.seconds < 1 + LATE
