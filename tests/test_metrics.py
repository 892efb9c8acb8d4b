"""/metrics on the web app and on the worker, scraped for real after real requests and jobs."""

from __future__ import annotations

import logging
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from settings import Settings
from tests.conftest import (
    AUTH_HEADERS,
    ClientFactory,
    RunWorker,
    SmtpRecorder,
    free_port,
    status_of,
)
from tests.scraping import label_values, sample
from web import create_app

EMAIL = {"to": "ann@example.com", "subject": "Hello", "body": "Hi"}


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/plain"
        return await response.text()


async def test_web_metrics_count_requests_by_route_enqueues_and_queue_depth(
    client: TestClient[Any, Any],
) -> None:
    for _ in range(2):
        assert (await client.post("/send-email", json=EMAIL)).status == 202
    assert (await client.post("/send-email", json={"to": "nobody"})).status == 400
    assert (await client.get("/task-status/0123456789abcdef")).status == 404
    assert (await client.get("/no/such/page/9f8e7d")).status == 404

    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    text = await response.text()

    requests = "jobservice_http_requests_total"
    assert sample(text, requests, method="POST", route="/send-email", status="202") == 2
    assert sample(text, requests, method="POST", route="/send-email", status="400") == 1
    assert sample(text, requests, route="/task-status/{task_id}", status="404") == 1
    # routes are labelled by their pattern: no raw URL ever becomes a label value
    assert label_values(text, requests, "route") == {
        "/send-email",
        "/task-status/{task_id}",
        "(unmatched)",
    }
    latency = "jobservice_http_request_duration_seconds_count"
    assert sample(text, latency, method="POST", route="/send-email") == 3
    assert sample(text, "jobservice_jobs_enqueued_total", function="send_email") == 2
    assert sample(text, "jobservice_queue_depth") == 2
    assert sample(text, "process_resident_memory_bytes") > 0


async def test_each_app_has_its_own_registry(
    client: TestClient[Any, Any], aiohttp_client: ClientFactory, settings: Settings
) -> None:
    """Metrics live in the app, not in a process-wide registry: two apps count apart."""
    other = await aiohttp_client(create_app(settings), headers=AUTH_HEADERS)
    assert (await client.post("/send-email", json=EMAIL)).status == 202
    mine = await (await client.get("/metrics")).text()
    theirs = await (await other.get("/metrics")).text()
    assert sample(mine, "jobservice_jobs_enqueued_total", function="send_email") == 1
    assert sample(theirs, "jobservice_jobs_enqueued_total", function="send_email") == 0


async def test_worker_serves_job_metrics_on_its_own_port(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    port = free_port()
    own = settings.model_copy(update={"worker_metrics_port": port})
    # one job at a time: whichever email runs first is deferred (retried later), the other
    # is refused for good, then the retry is accepted
    smtp_server.replies = ["451 4.3.0 try again later", "550 5.1.1 no such user"]
    first = (await (await client.post("/send-email", json=EMAIL)).json())["task_id"]
    second = (await (await client.post("/send-email", json=EMAIL)).json())["task_id"]
    assert (await client.post("/events", json={"event": {"n": 1}})).status == 202

    await run_worker(own, max_jobs=1)

    statuses = {(await status_of(client, task_id))["status"] for task_id in (first, second)}
    assert statuses == {"SUCCESS", "FAILURE"}
    text = await scrape(f"http://127.0.0.1:{port}/metrics")
    email = {"function": "send_email"}
    assert sample(text, "jobservice_jobs_started_total", **email) == 3
    assert sample(text, "jobservice_jobs_retried_total", **email) == 1
    assert sample(text, "jobservice_jobs_failed_total", **email) == 1
    assert sample(text, "jobservice_jobs_succeeded_total", **email) == 1
    assert sample(text, "jobservice_jobs_succeeded_total", function="log_event") == 1
    assert sample(text, "jobservice_jobs_in_progress", **email) == 0
    assert sample(text, "jobservice_emails_sent_total") == 1
    duration = "jobservice_job_duration_seconds_count"
    assert sample(text, duration, function="send_email", outcome="success") == 1
    assert sample(text, duration, function="send_email", outcome="retry") == 1
    assert sample(text, duration, function="send_email", outcome="failure") == 1
    assert sample(text, "jobservice_job_queue_wait_seconds_count", **email) == 3
    assert sample(text, "jobservice_job_queue_wait_seconds_sum", **email) > 0
    # the worker does not count enqueues: the web process does
    assert sample(text, "jobservice_jobs_enqueued_total", **email) == 0


async def test_a_worker_whose_metrics_port_is_taken_still_runs_jobs(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        own = settings.model_copy(update={"worker_metrics_port": port})
        task_id = (await (await client.post("/events", json={"event": {}})).json())["task_id"]
        with caplog.at_level(logging.ERROR, logger="jobservice.metrics"):
            await run_worker(own)
    assert (await status_of(client, task_id))["status"] == "SUCCESS"
    assert any(
        f"cannot listen on 127.0.0.1:{port}" in record.getMessage() for record in caplog.records
    )
