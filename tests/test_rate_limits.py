"""Rate limits shared by every worker (EMAIL_RATE_LIMIT, WEBHOOK_HOST_RATE_LIMIT), measured
where the traffic arrives: real worker processes, the SMTP sink and webhook targets on loopback.

What a limit promises is checked at the receiver, by the time each message arrives: no window
of the limit's length, wherever it starts, holds more than the limit. Waiting for a slot uses
up no try, shows in the job's status and is counted in the workers' metrics, once per job
rather than once a second (service.records.rate_limits).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from arq.connections import ArqRedis

from bench.rate_drain import worst_window
from service.queue.enqueue import enqueue
from service.records.rate_limits import Verdict, Window, end_send, parse_windows, take_slot
from settings import Settings
from tests.conftest import SmtpRecorder, free_port, status_of
from tests.processes import ServiceProcess
from tests.test_worker_process import service_env
from tests.waiting import wait_until
from tests.webhook_targets import ServerFactory, queue_webhook

EMAILS = 60
PER_SECOND = 20


@dataclass
class TimedRecorder(SmtpRecorder):
    """The tests' SMTP sink, also noting when each message arrived (its DATA's end)."""

    arrived: list[float] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.arrived.append(time.time())
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def smtp_server() -> Iterator[TimedRecorder]:
    recorder = TimedRecorder()
    recorder.port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=recorder.port)
    controller.start()
    try:
        yield recorder
    finally:
        controller.stop()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Webhook targets on two loopback hosts (127.0.0.1 and 127.0.0.2) may be reached."""
    return settings.model_copy(update={"webhook_allowed_hosts": ("127.0.0.1", "127.0.0.2")})


@dataclass
class Workers:
    """Worker processes started as users start them, each serving its own /metrics."""

    processes: list[ServiceProcess]
    metrics_ports: list[int]

    async def postponed(self, function: str, reason: str) -> float:
        """Postponements of ``function`` for ``reason``, summed over the workers."""
        labels = f'function="{function}",reason="{reason}"'
        line = rf"^jobservice_jobs_postponed_total\{{{labels}\}} (\S+)$"
        pattern = re.compile(line, re.MULTILINE)
        total = 0.0
        async with aiohttp.ClientSession() as http:
            for port in self.metrics_ports:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    found = pattern.search(await response.text())
                total += float(found.group(1)) if found else 0.0
        return total


StartWorkers = Callable[..., Any]


@pytest.fixture
async def start_workers(
    settings: Settings, client: TestClient[Any, Any], tmp_path: Path
) -> AsyncIterator[StartWorkers]:
    """Start ``count`` workers with extra environment variables; wait until /health lists them."""
    started: list[ServiceProcess] = []

    async def start(count: int, **env: str) -> Workers:
        ports = [free_port() for _ in range(count)]
        for n, port in enumerate(ports):
            variables = service_env(
                settings,
                WORKER_METRICS_PORT=str(port),
                WEBHOOK_ALLOWED_HOSTS=",".join(settings.webhook_allowed_hosts),
                **env,
            )
            command = ["-m", "arq", "service.WorkerSettings"]
            log = tmp_path / f"worker{n}.log"
            started.append(await asyncio.to_thread(ServiceProcess, command, variables, log))

        async def all_alive() -> bool:
            health = await (await client.get("/health")).json()
            return bool(health["worker"]["count"] == count)

        await wait_until(all_alive, within=30, interval=0.1)
        return Workers(started[-count:], ports)

    yield start
    for process in started:
        await asyncio.to_thread(process.stop)


@pytest.mark.timeout(120)
async def test_two_workers_send_no_more_emails_in_any_second_than_the_limit(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    smtp_server: TimedRecorder,
    start_workers: StartWorkers,
) -> None:
    workers: Workers = await start_workers(2, EMAIL_RATE_LIMIT=f"{PER_SECOND}/second")
    started = time.time()
    ids = [
        await enqueue(redis, "send_email", {"to": f"u{n}@example.com", "subject": "s", "body": "b"})
        for n in range(EMAILS)
    ]

    async def one_shows_its_wait() -> bool:
        status = await status_of(client, ids[-1])
        return status.get("waiting_for") == "rate limit (EMAIL_RATE_LIMIT)"

    await wait_until(one_shows_its_wait, within=10, interval=0.05)
    waiting = await status_of(client, ids[-1])
    assert waiting["status"] == "PENDING", waiting  # not a failure, not an attempt
    assert waiting["attempts"] == 0, waiting
    assert waiting["history"] == [], waiting

    async def all_arrived() -> bool:
        return len(smtp_server.messages) >= EMAILS

    await wait_until(all_arrived, within=60, interval=0.05)
    drained = max(smtp_server.arrived) - started
    worst = worst_window(smtp_server.arrived, 1.0)
    postponed = await workers.postponed("send_email", "rate_limit")
    print(
        f"{EMAILS} emails at {PER_SECOND}/s by 2 workers: worst one-second window {worst}, "
        f"drained in {drained:.2f} s, {postponed / EMAILS:.2f} postponements per email"
    )
    assert len(smtp_server.messages) == EMAILS
    assert worst <= PER_SECOND
    # the first PER_SECOND go at once, each of the others waits for its slot once (a few
    # twice, on a loaded machine): no churn. Re-checking once a second would cost 60 or more
    assert EMAILS - PER_SECOND <= postponed <= EMAILS - PER_SECOND // 2
    for task_id in ids:
        status = await status_of(client, task_id)
        assert status["status"] == "SUCCESS", status
        assert status["attempts"] == 1, status
        assert [entry["outcome"] for entry in status["history"]] == ["success"], status
        assert "waiting_for" not in status, status


@dataclass
class Target:
    """A webhook target noting when each delivery arrived."""

    arrived: list[float] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.arrived.append(time.time())
        return web.json_response({"ok": True})


async def _serve(aiohttp_server: ServerFactory, target: Target, host: str) -> str:
    app = web.Application()
    app.router.add_post("/hook", target.handle)
    server = await aiohttp_server(app, host=host)
    return str(server.make_url("/hook"))


@pytest.mark.timeout(120)
async def test_a_webhook_host_over_its_limit_waits_and_another_host_does_not(
    client: TestClient[Any, Any],
    aiohttp_server: ServerFactory,
    start_workers: StartWorkers,
) -> None:
    limit = 3
    busy, quiet = Target(), Target()
    busy_url = await _serve(aiohttp_server, busy, "127.0.0.1")
    quiet_url = await _serve(aiohttp_server, quiet, "127.0.0.2")
    workers: Workers = await start_workers(2, WEBHOOK_HOST_RATE_LIMIT=f"{limit}/second")
    held = [await queue_webhook(client, busy_url, {"n": n}) for n in range(3 * limit)]
    free = [await queue_webhook(client, quiet_url, {"n": n}) for n in range(limit)]

    async def all_delivered() -> bool:
        return len(busy.arrived) == len(held) and len(quiet.arrived) == len(free)

    await wait_until(all_delivered, within=30, interval=0.05)
    assert worst_window(busy.arrived, 1.0) <= limit
    # the quiet host's deliveries, queued after all of the busy host's, did not wait for them
    assert max(quiet.arrived) < sorted(busy.arrived)[limit]
    assert await workers.postponed("deliver_webhook", "rate_limit") >= 2 * limit
    for task_id in held + free:
        status = await status_of(client, task_id)
        assert status["status"] == "SUCCESS", status
        assert status["attempts"] == 1, status


async def test_slots_are_booked_in_order_and_a_send_counts_until_it_has_ended(
    redis: ArqRedis,
) -> None:
    """The booking script alone: the sixth of five-a-second is booked a second (and the
    margin) later; at its slot it still waits while the five are under way, and until a
    second after they ended; once they are older than that, it goes."""
    windows = (Window(5, 1000), Window(7, 60_000))
    assert parse_windows("5/second;7/minute") == windows

    async def take(job_id: str) -> Verdict:
        return await take_slot(
            redis, job_id, "email", windows, waiting_for="rate limit", ttl=60, lease=30
        )

    verdicts = [await take(f"job{n}") for n in range(8)]
    assert [verdict.go for verdict in verdicts] == [True] * 5 + [False] * 3
    assert 0.75 < verdicts[5].wait < 0.81  # comes back LEAD ahead of its slot, 1.05 s away
    assert verdicts[6].wait == pytest.approx(verdicts[5].wait, abs=0.01)  # the same second
    assert verdicts[7].wait > 59  # the minute's 7 are taken: the 8th waits for a minute
    booked = await redis.hgetall("jobsvc:meta:job5")  # type: ignore[misc]
    assert booked[b"waiting_for"] == b"rate limit"

    async def at_its_slot() -> Verdict:
        await redis.hset("jobsvc:meta:job5", "rate_slot", str(int(time.time() * 1000)))  # type: ignore[misc]
        return await take("job5")

    under_way = await at_its_slot()
    assert not under_way.go
    assert under_way.wait == pytest.approx(0.1)
    for verdict in verdicts[:5]:
        await end_send(redis, "email", windows, verdict.token)
    just_ended = await at_its_slot()
    assert not just_ended.go
    assert 0.7 < just_ended.wait <= 0.75
    sent = "jobsvc:rate:email:5/1000:sent"
    await redis.zadd(sent, {member: 0 for member in await redis.zrange(sent, 0, -1)})
    free = await at_its_slot()
    assert free.go
    assert free.wait == 0
    assert await redis.hgetall("jobsvc:meta:job5") == {}  # type: ignore[misc]
    assert await redis.zcard("jobsvc:rate:email:5/1000:sending") == 1
    assert await redis.llen("jobsvc:rate:email:5/1000:slots") == 5  # type: ignore[misc]
    assert await redis.llen("jobsvc:rate:email:7/60000:slots") == 7  # type: ignore[misc]
