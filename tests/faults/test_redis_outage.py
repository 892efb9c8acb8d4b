"""A worker whose Redis dies, with the default settings: it says so once, backs off, says when
Redis is back, exits non-zero once Redis has been away for REDIS_RETRY_SECONDS, and stops at
once on SIGTERM while Redis is away (service.store.outage, service.engine.loop).

Before, the worker's retries nested (a command's retry loop around a connect retry loop, each
sized for REDIS_RETRY_SECONDS): it wrote nothing for minutes, exited after about
REDIS_RETRY_SECONDS squared, and a SIGTERM during the outage took the grace plus another
REDIS_RETRY_SECONDS.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from typing import Any

import pytest

from service.queue.enqueue import enqueue
from service.store import keys
from service.store.redis import open_pool
from settings import Settings
from tests.conftest import SmtpRecorder
from tests.faults.conftest import Spawn
from tests.faults.counting_port import CountingPort
from tests.faults.processes import Process, RedisServer
from tests.waiting import wait_until

STARTUP = 30
GONE = "Redis does not answer"
BACK = "Redis answers again"
GIVING_UP = "giving up, the worker exits with status 1"
COUNTED_FOR = 5.0  # seconds of reconnect attempts counted
MOST_ATTEMPTS_PER_SECOND = 2.0  # backoff up to 1 s: about one a second, whatever waits


def default(name: str) -> Any:
    return Settings.model_fields[name].default


# the fault fixtures shorten these; here the worker runs with the defaults a user gets
DEFAULTS = {
    name: default(name)
    for name in ("redis_retry_seconds", "worker_shutdown_grace", "email_job_timeout")
} | {"smtp_timeout": default("smtp_timeout"), "job_lock_margin": default("job_lock_margin")}


async def _ready(worker: Process) -> None:
    async def ready() -> bool:
        return "worker ready" in await worker.output()

    await wait_until(ready, within=STARTUP)


async def _says(worker: Process, text: str, within: float) -> None:
    async def said() -> bool:
        return text in await worker.output()

    await wait_until(said, within=within)


async def test_an_idle_worker_says_once_that_redis_is_gone_backs_off_and_says_when_it_is_back(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    worker = await spawn("worker", **DEFAULTS)
    await _ready(worker)

    await redis_server.stop()  # SIGKILL
    await _says(worker, GONE, within=5)
    async with CountingPort(redis_server.port) as port:
        started = time.monotonic()
        await asyncio.sleep(COUNTED_FOR)  # the measurement itself: attempts in this window
        attempts, seconds = port.accepted, time.monotonic() - started
    rate = attempts / seconds
    print(f"reconnect attempts while Redis is gone: {attempts} in {seconds:.1f} s = {rate:.2f}/s")
    assert attempts >= 1, "the worker kept trying"
    assert rate <= MOST_ATTEMPTS_PER_SECOND, "reconnects back off, no tight loop"

    await redis_server.start()
    await _says(worker, BACK, within=10)
    output = await worker.output()
    assert output.count(GONE) == 1, output
    assert output.count(BACK) == 1, output
    assert worker.running()


async def test_jobs_that_cannot_record_their_end_wait_for_redis_and_finish_once_it_is_back(
    settings: Settings, redis_server: RedisServer, smtp_server: SmtpRecorder, spawn: Spawn
) -> None:
    """Twenty emails finish their SMTP exchange while Redis is gone: each waits to record it
    and succeeds once Redis is back, none sent twice. Meanwhile Redis's port accepts and drops
    every connection (as a proxy in front of a dead Redis does): without the handshake's retry
    (service.store.outage.RetriedHandshake) a new connection dropped there failed all twenty
    for good; without the turns the worker's calls take, they reconnected 3.2 times a second."""
    emails = 20
    worker = await spawn("worker", **DEFAULTS)
    await _ready(worker)
    smtp_server.hold = threading.Event()
    redis = await open_pool(settings)
    try:
        ids = []
        for n in range(emails):
            email = {"to": "ann@example.com", "subject": f"held {n}", "body": "hi"}
            ids.append(await enqueue(redis, "send_email", email))
    finally:
        await redis.aclose(close_connection_pool=True)

    async def all_held() -> bool:
        return smtp_server.waiting == emails

    await wait_until(all_held, within=STARTUP)
    await redis_server.stop()
    await _says(worker, GONE, within=5)
    async with CountingPort(redis_server.port) as port:
        smtp_server.hold.set()  # each job now has an email sent and nowhere to record it
        started = time.monotonic()
        await asyncio.sleep(COUNTED_FOR)  # the measurement itself: attempts in this window
        attempts, seconds = port.accepted, time.monotonic() - started
    print(f"reconnects with {emails} jobs waiting on Redis: {attempts} in {seconds:.1f} s")
    assert attempts / seconds <= MOST_ATTEMPTS_PER_SECOND
    assert len(smtp_server.messages) == emails

    await redis_server.start()
    redis = await open_pool(settings)
    try:

        async def all_succeeded() -> bool:
            outcomes = [await redis.hget(keys.job_meta(job), "outcome") for job in ids]  # type: ignore[misc]
            return outcomes == [b"success"] * emails

        await wait_until(all_succeeded, within=20)
    finally:
        await redis.aclose(close_connection_pool=True)
    assert len(smtp_server.messages) == emails, "none sent twice"
    output = await worker.output()
    assert output.count(GONE) == 1, output
    assert output.count(BACK) == 1, output
    assert worker.running()


@pytest.mark.timeout(90)
async def test_a_worker_exits_non_zero_once_redis_has_been_away_for_redis_retry_seconds(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    """With the default REDIS_RETRY_SECONDS (30), as a user runs it: before, the retries
    nested, and a worker gave up after about 14 times that."""
    retry_seconds = DEFAULTS["redis_retry_seconds"]
    assert retry_seconds == 30
    worker = await spawn("worker", **DEFAULTS)
    await _ready(worker)

    await redis_server.stop()
    gone = time.monotonic()
    assert await worker.wait(within=retry_seconds + 10) == 1
    elapsed = time.monotonic() - gone
    print(f"worker exited {elapsed:.1f} s after Redis was killed")
    assert retry_seconds <= elapsed
    output = await worker.output()
    assert output.count(GONE) == 1, output
    assert output.count(GIVING_UP) == 1, output
    assert "Traceback" not in output


@pytest.mark.timeout(90)
async def test_sigterm_while_redis_is_gone_stops_the_worker_in_seconds_without_the_grace(
    settings: Settings, redis_server: RedisServer, smtp_server: SmtpRecorder, spawn: Spawn
) -> None:
    """With a job running (an email whose server holds its reply), Redis killed, then SIGTERM:
    the default grace (25 s) is not waited, since nothing can be recorded; the job runs again
    once its lock expires, as after a kill."""
    worker = await spawn("worker", **DEFAULTS)
    await _ready(worker)
    smtp_server.hold = threading.Event()
    redis = await open_pool(settings)
    try:
        email = {"to": "ann@example.com", "subject": "held", "body": "hi"}
        await enqueue(redis, "send_email", email)
    finally:
        await redis.aclose(close_connection_pool=True)

    async def mid_email() -> bool:
        return smtp_server.data_arrived.is_set()

    await wait_until(mid_email, within=STARTUP)

    await redis_server.stop()
    await _says(worker, GONE, within=5)
    worker.signal(signal.SIGTERM)
    signalled = time.monotonic()
    await worker.wait(within=10)
    elapsed = time.monotonic() - signalled
    print(f"worker exited {elapsed:.1f} s after SIGTERM, Redis gone")
    assert elapsed < 5
    output = await worker.output()
    assert "1 running jobs cut now" in output
    assert output.count(GONE) == 1, output
