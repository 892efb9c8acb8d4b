"""Circuit breakers per destination (service.worker.breakers), against real servers on
loopback: webhook targets on 127.0.0.2 and 127.0.0.3 (each its own host, so its own
breaker), a healthy one on 127.0.0.1, the in-process SMTP sink, and real worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.connections import ArqRedis

from service.engine.loop import BatchWorker as Worker
from service.observability.metrics import exposition
from service.records import breakers
from settings import Settings
from tests.conftest import SmtpRecorder, accepted_task, background_worker, free_port, status_of
from tests.dashboard_client import Dashboard
from tests.processes import ServiceProcess
from tests.test_worker_process import service_env
from tests.waiting import wait_until
from tests.webhook_targets import ServerFactory, queue_webhook

COOLDOWN = 3.0
RETRY_AFTER = 5  # seconds the failing target asks for: longer than the cool-down
SETTLE = 30.0  # seconds any wait below may take at most, on a loaded 2-core machine


class Target:
    """A webhook target that answers 503 with Retry-After while ``down``, then 200 after a
    short hold; it records each request's start and end."""

    def __init__(self, hold: float = 0.3) -> None:
        self.down = True
        self.hold = hold
        self.calls: list[tuple[float, float]] = []

    async def handle(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        if self.down:
            self.calls.append((started, time.monotonic()))
            return web.Response(status=503, headers={"Retry-After": str(RETRY_AFTER)})
        await asyncio.sleep(self.hold)
        self.calls.append((started, time.monotonic()))
        return web.json_response({"ok": True})

    def calls_since(self, moment: float) -> list[tuple[float, float]]:
        return sorted(call for call in self.calls if call[0] >= moment)


async def serve(aiohttp_server: ServerFactory, handler: Any, host: str, port: int = 0) -> str:
    app = web.Application()
    app.router.add_post("/hook", handler)
    server: TestServer = await aiohttp_server(app, host=host, port=port or None)
    return str(server.make_url("/hook"))


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "breaker_failures": 5,
            "breaker_cooldown": COOLDOWN,
            "breaker_cooldown_max": 4 * COOLDOWN,
            "job_max_tries": 30,  # the jobs outlast the outage; none fails for good
            "webhook_allowed_hosts": ("127.0.0.1", "127.0.0.2", "127.0.0.3"),
        }
    )


@pytest.fixture
async def worker(settings: Settings, redis: ArqRedis) -> AsyncIterator[Worker]:
    async with background_worker(settings, poll_delay=0.01) as running:
        yield running


async def breaker_of(redis: ArqRedis, destination: str) -> breakers.Breaker | None:
    return next((b for b in await breakers.tracked(redis) if b.destination == destination), None)


async def until_state(redis: ArqRedis, destination: str, state: str | None) -> None:
    async def reached() -> bool:
        found = await breaker_of(redis, destination)
        return (found.state if found else None) == state

    await wait_until(reached, within=SETTLE)


async def until_done(client: TestClient[Any, Any], task_ids: list[str]) -> None:
    async def all_succeeded() -> bool:
        states = [(await status_of(client, task_id))["status"] for task_id in task_ids]
        assert "FAILURE" not in states
        return all(state == "SUCCESS" for state in states)

    await wait_until(all_succeeded, within=SETTLE, interval=0.1)


async def until_waiting(client: TestClient[Any, Any], task_id: str, label: str) -> dict[str, Any]:
    async def held() -> bool:
        return (await status_of(client, task_id)).get("waiting_for") == label

    await wait_until(held, within=SETTLE)
    return await status_of(client, task_id)


async def metrics_text(worker: Worker) -> str:
    return (await exposition(worker.ctx["metrics"].registry)).decode()


async def page(client: TestClient[Any, Any], path: str) -> str:
    response = await client.get(path, headers={"Accept": "text/html"})
    assert response.status == 200
    return await response.text()


async def send_email(client: TestClient[Any, Any], subject: str) -> str:
    return await accepted_task(
        client, "/send-email", {"to": "ann@example.com", "subject": subject, "body": "hi"}
    )


async def test_a_503_with_retry_after_opens_its_hosts_breaker_at_once_and_a_probe_closes_it(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    worker: Worker,
    aiohttp_server: ServerFactory,
    smtp_server: SmtpRecorder,
) -> None:
    target = Target()
    failing = await serve(aiohttp_server, target.handle, "127.0.0.2")
    healthy = await serve(aiohttp_server, ok, "127.0.0.1")
    destination = "webhook:127.0.0.2"

    first = await queue_webhook(client, failing, {"n": 0})
    await until_state(redis, destination, "open")
    assert len(target.calls) == 1  # opened by the first answer, not after five

    held = [await queue_webhook(client, failing, {"n": n}) for n in range(1, 4)]
    others = [await queue_webhook(client, healthy, {"n": n}) for n in range(3)]
    emails = [await send_email(client, f"meanwhile {n}") for n in range(3)]
    await until_done(client, others + emails)  # a dead host slows neither other hosts nor mail
    assert len(smtp_server.messages) == 3

    label = "webhook host 127.0.0.2 (circuit breaker open)"
    waiting = await until_waiting(client, held[0], label)
    assert (waiting["status"], waiting["attempts"]) == ("PENDING", 0)  # not an attempt
    retried = await until_waiting(client, first, label)
    assert (retried["status"], retried["attempts"]) == ("RETRY", 1)
    assert len(target.calls) == 1  # nothing else was sent to the open host

    overview = await page(client, "/dashboard")
    assert 'data-destination="webhook:127.0.0.2"' in overview  # the breakers card
    assert f"waiting for the {label}" in overview  # the held jobs, among the deferred
    assert f"waiting for the {label}" in await page(client, f"/dashboard/jobs/{held[0]}")

    health = await (await client.get("/health")).json()
    assert health["status"] == "ok"  # listed, not unhealthy
    assert [b["destination"] for b in health["open_breakers"]] == [destination]
    assert health["open_breakers"][0]["label"] == "webhook host 127.0.0.2"
    shown = await metrics_text(worker)
    assert 'jobservice_breaker_state{destination="webhook:127.0.0.2"} 2.0' in shown
    assert 'jobservice_breaker_opened_total{kind="webhook"} 1.0' in shown

    recovered = time.monotonic()
    target.down = False
    await until_done(client, [first, *held])
    assert await breaker_of(redis, destination) is None
    after = target.calls_since(recovered)
    assert len(after) == 4  # one delivery each, no try lost to waiting
    probe, *rest = after
    assert all(probe[1] <= call[0] for call in rest)  # exactly one job went through first
    statuses = [await status_of(client, task_id) for task_id in [first, *held]]
    assert [s["attempts"] for s in statuses] == [2, 1, 1, 1]
    assert all("waiting_for" not in s for s in statuses)
    shown = await metrics_text(worker)
    assert 'jobservice_breaker_state{destination="webhook:127.0.0.2"}' not in shown
    assert 'jobservice_breaker_closed_total{kind="webhook"} 1.0' in shown


async def test_five_connection_failures_in_a_row_open_the_hosts_breaker(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    worker: Worker,
    aiohttp_server: ServerFactory,
) -> None:
    port = free_port("127.0.0.3")  # nothing listens there yet: connection refused
    url = f"http://127.0.0.3:{port}/hook"
    destination = "webhook:127.0.0.3"

    task_id = await queue_webhook(client, url, {"n": 1})
    await until_state(redis, destination, "open")
    status = await until_waiting(client, task_id, "webhook host 127.0.0.3 (circuit breaker open)")
    assert status["attempts"] == 5  # the sixth try is held back, not spent
    assert status["error"] == "webhook unreachable: connection refused"
    found = await breaker_of(redis, destination)
    assert found is not None
    assert found.failures == 5

    await serve(aiohttp_server, ok, "127.0.0.3", port)  # the host comes back
    await until_done(client, [task_id])
    assert (await status_of(client, task_id))["attempts"] == 6
    assert await breaker_of(redis, destination) is None


async def test_an_smtp_421_opens_the_smtp_breaker_and_webhooks_keep_flowing(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    worker: Worker,
    aiohttp_server: ServerFactory,
    smtp_server: SmtpRecorder,
) -> None:
    destination = "smtp"
    smtp_server.replies.append("421 4.3.2 Service shutting down, try again later")
    first = await send_email(client, "first")
    await until_state(redis, destination, "open")

    held = [await send_email(client, f"held {n}") for n in range(2)]
    healthy = await serve(aiohttp_server, ok, "127.0.0.1")
    hooks = [await queue_webhook(client, healthy, {"n": n}) for n in range(3)]
    await until_done(client, hooks)
    label = "SMTP server (circuit breaker open)"
    assert (await until_waiting(client, held[0], label))["attempts"] == 0
    assert smtp_server.messages == []
    seen = await (await client.get("/health")).text() + await page(client, "/dashboard")
    assert "SMTP server" in seen
    assert str(smtp_server.port) not in seen  # the server's address is internal

    await until_done(client, [first, *held])  # the probe after the cool-down closes it
    assert await breaker_of(redis, destination) is None
    subjects = sorted(m.message["Subject"] for m in smtp_server.messages)
    assert subjects == ["first", "held 0", "held 1"]  # each once


async def test_close_now_from_the_api_and_the_dashboard(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    aiohttp_client: Any,
) -> None:
    from web import create_app

    destination = "webhook:hooks.example.com"
    judged_by = breakers.Limits(5, COOLDOWN, COOLDOWN, 100)
    outage = breakers.Failure(retry_after=3600.0, unavailable=True)

    async def open_it() -> None:
        await breakers.failed(redis, destination, "j", int(time.time() * 1000), outage, judged_by)

    await open_it()
    listed = await (await client.get("/breakers")).json()
    assert [(b["destination"], b["state"]) for b in listed["breakers"]] == [(destination, "open")]
    response = await client.post(f"/breakers/{destination}/close")
    assert response.status == 200, await response.text()
    assert (await response.json())["state"] == "closed"
    assert await breaker_of(redis, destination) is None
    again = await client.post(f"/breakers/{destination}/close")
    assert again.status == 404  # nothing open: said, nothing done
    assert (await client.post("/breakers/not-a-destination/close")).status == 404

    await open_it()
    board = Dashboard(await aiohttp_client(create_app(settings)))
    await board.sign_in()
    page = await board.page("/dashboard")
    assert "webhook host hooks.example.com" in page
    assert "Close now" in page
    form = re.search(r'action="(/dashboard/breakers/[^"]+/close)"', page)
    assert form is not None  # the button's own form, as a browser would post it
    button = html.unescape(form.group(1))
    refused = await board.post(button, csrf=False)
    assert refused.status == 403
    assert await breaker_of(redis, destination) is not None  # refused: nothing changed
    closed = await board.post(button)
    assert closed.status == 303
    assert closed.headers["Location"] == "/dashboard#breakers"
    assert await breaker_of(redis, destination) is None
    assert "no circuit breaker is open" in await board.page("/dashboard")


@pytest.fixture
def worker_processes(settings: Settings, tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    env = service_env(
        settings,
        BREAKER_FAILURES="5",
        BREAKER_COOLDOWN=str(COOLDOWN),
        JOB_MAX_TRIES="30",
        RETRY_BACKOFF_BASE="0.01",
        RETRY_BACKOFF_MAX="0.05",
        WEBHOOK_ALLOWED_HOSTS="127.0.0.1,127.0.0.2",
        WORKER_METRICS_PORT="0",
        CRON_CATCH_UP="0",
    )
    processes = [
        ServiceProcess(["-m", "arq", "service.WorkerSettings"], env, tmp_path / f"w{n}.log")
        for n in range(2)
    ]
    try:
        yield processes
    finally:
        for process in processes:
            with contextlib.suppress(Exception):
                process.stop()


async def test_worker_processes_share_one_breaker_and_one_probe(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    aiohttp_server: ServerFactory,
    worker_processes: list[ServiceProcess],
) -> None:
    target = Target()
    failing = await serve(aiohttp_server, target.handle, "127.0.0.2")
    destination = "webhook:127.0.0.2"

    first = await queue_webhook(client, failing, {"n": 0})
    await until_state(redis, destination, "open")
    held = [await queue_webhook(client, failing, {"n": n}) for n in range(1, 9)]
    for task_id in held:  # both processes took some, and held every one back
        await until_waiting(client, task_id, "webhook host 127.0.0.2 (circuit breaker open)")
    assert len(target.calls) == 1

    recovered = time.monotonic()
    target.down = False
    await until_done(client, [first, *held])
    probe, *rest = target.calls_since(recovered)
    assert len(rest) == 8
    assert all(probe[1] <= call[0] for call in rest)  # one probe across both processes
    assert await breaker_of(redis, destination) is None
