"""Shared fixtures: a real Redis (flushed per test), a real SMTP server, a real arq worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from arq.connections import ArqRedis
from blockbuster import BlockBuster

from jobs.registry import REGISTRY
from service.engine.loop import BatchWorker as Worker
from service.store.redis import open_pool
from service.worker.options import worker_options
from settings import Settings
from tests.s3_server import moto_server  # noqa: F401  (the fixture, for every test module)
from web import create_app

# The tests own this database and flush it before every test.
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
_private_redis: subprocess.Popen[bytes] | None = None
# The API token the test settings accept; `client` sends it, so tests opt out to test refusals.
TEST_API_TOKEN = "test-token-0123456789abcdef"
AUTH_HEADERS = {"Authorization": f"Bearer {TEST_API_TOKEN}"}

RunWorker = Callable[..., Coroutine[Any, Any, Worker]]
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at ``host`` now (loopback, or a test host's own address)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ping_answered(client: redis_py.Redis) -> bool:
    """Whether ``client``'s Redis answers a PING now; closes the client either way."""
    try:
        return bool(client.ping())
    except (redis_py.RedisError, OSError):
        return False
    finally:
        client.close()


def _redis_answers(url: str) -> bool:
    return ping_answered(
        redis_py.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    )


def pytest_configure(config: pytest.Config) -> None:
    """Use the Redis at TEST_REDIS_URL, or start a private one so `make test` needs no set-up."""
    global TEST_REDIS_URL, _private_redis
    # Worker processes the tests start inherit this: none catches up a missed 00:00 report or
    # 02:00 cleanup mid-test when the suite runs just after those times (tests that want
    # catching up set CRON_CATCH_UP themselves).
    os.environ.setdefault("CRON_CATCH_UP", "0")
    if _redis_answers(TEST_REDIS_URL):
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.exit(
            f"No Redis answers at {TEST_REDIS_URL} and redis-server is not installed: "
            "install it (sudo apt-get install redis-server) or set TEST_REDIS_URL.",
            returncode=2,
        )
    port = free_port()
    _private_redis = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    TEST_REDIS_URL = f"redis://127.0.0.1:{port}/15"
    deadline = time.monotonic() + 10
    while not _redis_answers(TEST_REDIS_URL):
        if time.monotonic() > deadline or _private_redis.poll() is not None:
            pytest.exit("could not start a private redis-server for the tests", returncode=2)
        time.sleep(0.05)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _private_redis is not None:
        _private_redis.terminate()
        _private_redis.wait(10)


def _writes_to_devnull(predicate: Callable[..., bool]) -> Callable[..., bool]:
    def can_block(file: Any, *args: Any, **kwargs: Any) -> bool:
        return getattr(file, "name", None) == os.devnull or predicate(file, *args, **kwargs)

    return can_block


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Any blocking call made inside a running event loop fails the test, as in aiohttp's suite.

    That is every async test and async fixture (pytest-asyncio runs them in the loop), the app
    and worker they run, and the loops that test servers run in threads (aiosmtpd's). Code
    outside a loop (sync tests and fixtures, subprocesses) is not checked.
    """
    bb = BlockBuster()
    # pytest's own log file is os.devnull unless one is configured: a write there cannot block
    for name in ("io.TextIOWrapper.write", "io.BufferedWriter.write"):
        function = bb.functions[name]
        function.can_block_predicate = _writes_to_devnull(function.can_block_predicate)
    # aiohttp resolves a static route's folder once, as the app is built (its own suite allows it)
    for name in ("os.readlink", "os.stat", "os.path.abspath", "os.path.samestat"):
        bb.functions[name].can_block_in("aiohttp/web_urldispatcher.py", "add_static")
    # Playwright looks for its driver's executable once, as it starts
    bb.functions["os.stat"].can_block_in("playwright/_impl/_driver.py", "compute_driver_executable")
    # asyncpg, as it opens a connection, looks for ~/.pgpass and the client certificates of
    # ~/.postgresql/ (a few stats, and reads of whichever exist): once per new connection,
    # which a pool makes at start and after the server went away, not per query
    for function in bb.functions.values():
        function.can_block_in("asyncpg/connect_utils.py", "_parse_connect_dsn_and_args")
    bb.activate()
    try:
        yield bb
    finally:
        bb.deactivate()


@dataclass
class ReceivedMail:
    sender: str
    recipients: list[str]
    message: EmailMessage


@dataclass
class SmtpRecorder:
    """aiosmtpd handler that keeps every message; queued replies refuse the next DATA.

    With ``hold`` set to an unset Event, the reply to DATA waits until the test sets it: the
    client is then "mid-email". A client that disconnects meanwhile cancels the handler
    (aiosmtpd does so on connection loss), so its message is not kept, as with a real server
    that never got to acknowledge it.
    """

    messages: list[ReceivedMail] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    port: int = 0
    hold: threading.Event | None = None
    data_arrived: threading.Event = field(default_factory=threading.Event)
    waiting: int = 0  # DATA replies being held right now

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_arrived.set()
        self.waiting += 1
        try:
            if self.hold is not None:
                # a cancelled wait leaves this thread blocked until the hold is released,
                # which the test or the fixture's teardown always does
                await asyncio.to_thread(self.hold.wait)
        finally:
            self.waiting -= 1
        if self.replies:
            return self.replies.pop(0)
        message = message_from_bytes(envelope.original_content or b"", policy=default_policy)
        assert isinstance(message, EmailMessage)
        mail_from = envelope.mail_from or ""
        self.messages.append(ReceivedMail(mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


@contextlib.asynccontextmanager
async def background_worker(settings: Settings, **overrides: Any) -> AsyncIterator[Worker]:
    """A real worker running in this event loop (no signal handlers) until the block ends:
    for tests that need one polling the queue throughout, as in production."""
    options = worker_options(settings)
    options.update(handle_signals=False, **overrides)
    running = Worker(**options)
    task = asyncio.create_task(running.main())
    try:
        yield running
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await running.close()


@pytest.fixture
def smtp_server() -> Iterator[SmtpRecorder]:
    recorder = SmtpRecorder()
    recorder.port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=recorder.port)
    controller.start()
    try:
        yield recorder
    finally:
        if recorder.hold is not None:
            recorder.hold.set()
        controller.stop()


@pytest.fixture
def settings(tmp_path: Path, smtp_server: SmtpRecorder) -> Settings:
    return Settings(
        redis_url=TEST_REDIS_URL,
        data_dir=tmp_path / "data",
        database_url=None,  # DATA_DIR's SQLite file, whatever the environment says
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        smtp_timeout=5,
        mail_from="Job Service <jobs@example.com>",
        job_max_tries=3,
        retry_backoff_base=0.01,
        retry_backoff_max=0.05,
        webhook_timeout=2,
        image_threads=2,
        report_recipients=(),
        api_tokens=(TEST_API_TOKEN,),
        # webhook targets in tests are local servers: opened explicitly, like an operator would
        webhook_allowed_hosts=("127.0.0.1",),
        # no catch-up of missed cron runs unless a test asks for it: a worker started just
        # after 00:00 or 02:00 would otherwise queue a report or a cleanup mid-test
        cron_catch_up=0,
        # no circuit breakers unless a test asks for them (tests/test_breakers.py): tests of
        # retries against one loopback host would otherwise see their jobs held back
        breaker_failures=0,
    )


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of the test's own, so it can be stopped without harming others."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        process.kill()
        process.wait()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[ArqRedis]:
    pool = await open_pool(settings)
    await pool.flushdb()
    yield pool
    await pool.aclose(close_connection_pool=True)


@pytest.fixture
async def run_worker(settings: Settings, redis: ArqRedis) -> AsyncIterator[RunWorker]:
    """Run a burst worker until the queue is empty; options override the service's own."""
    workers: list[Worker] = []

    async def run(use_settings: Settings | None = None, **overrides: Any) -> Worker:
        options = worker_options(use_settings or settings)
        options["redis_pool"].wait_for_work = False  # a burst run ends once the queue is empty
        options.update(burst=True, poll_delay=0.01, handle_signals=False, **overrides)
        worker = Worker(**options)
        workers.append(worker)
        await worker.main()
        return worker

    yield run
    for worker in workers:
        await worker.close()


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> TestClient[Any, Any]:
    """A client of the app that sends a valid API token with every request."""
    return await aiohttp_client(create_app(settings), headers=AUTH_HEADERS)


async def queued(redis: ArqRedis, settings: Settings) -> list[str]:
    """Ids of the jobs waiting in the queues (every named queue and priority, arq's own
    queue first: service.engine.queues)."""
    found = []
    for key in REGISTRY.layout(settings).all_keys():
        found += [raw.decode() for raw in await redis.zrange(key, 0, -1)]
    return found


async def status_of(client: TestClient[Any, Any], task_id: str) -> dict[str, Any]:
    response = await client.get(f"/task-status/{task_id}")
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def accepted_task(client: TestClient[Any, Any], path: str, body: dict[str, Any]) -> str:
    """POST ``body`` as JSON to an endpoint that queues a job; checks the 202, gives the task id."""
    response = await client.post(path, json=body)
    assert response.status == 202, await response.text()
    task_id: str = (await response.json())["task_id"]
    return task_id


async def assert_refused(
    response: ClientResponse, status: int, reason: str, redis: ArqRedis, settings: Settings
) -> None:
    """The request got ``status`` with ``reason`` in its JSON error, and nothing was queued."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    assert reason in (await response.json())["error"]
    assert await queued(redis, settings) == []
