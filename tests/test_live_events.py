"""GET /jobs/{id}/events: a snapshot first, then every state change and progress step, then
the stream ends when the job has finished. Real worker, real Redis pub/sub, real HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpServer

from tests.conftest import RunWorker, status_of
from tests.days import RECENT_DAY
from tests.images import image_bytes
from tests.sse import Event, all_events, next_event
from tests.webhook_targets import hook_url, queue_webhook


async def upload(client: TestClient[Any, Any], data: bytes) -> str:
    form = aiohttp.FormData()
    form.add_field("file", data, filename="photo", content_type="application/octet-stream")
    response = await client.post("/upload", data=form)
    assert response.status == 202, await response.text()
    task_id: str = (await response.json())["task_id"]
    return task_id


def statuses(events: list[Event]) -> list[str]:
    return [event.data["status"] for event in events if event.kind == "status"]


async def test_image_job_streams_started_each_step_and_success(
    client: TestClient[Any, Any], run_worker: RunWorker
) -> None:
    task_id = await upload(client, image_bytes((1600, 1200)))
    response = await client.get(f"/jobs/{task_id}/events")
    assert response.status == 200
    assert response.content_type == "text/event-stream"
    first = await next_event(response)
    assert first is not None
    assert first.kind == "status"
    assert first.data["status"] == "PENDING"
    assert first.data["task_id"] == task_id

    await run_worker()
    rest = await asyncio.wait_for(all_events(response), 10)

    assert statuses(rest) == ["STARTED", "SUCCESS"]
    steps = [
        (e.data["step"], e.data["done"], e.data["total"]) for e in rest if e.kind == "progress"
    ]
    assert steps == [("decoded", 1, 3), ("resized", 2, 3), ("saved", 3, 3)]
    assert [e.kind for e in rest] == ["status", "progress", "progress", "progress", "status"]
    done = rest[-1].data
    assert done["result"]["width"] == 800
    assert done["result"]["thumbnail"].endswith("_thumb.jpg")
    assert done["attempts"] == 1
    assert done["finished_at"] is not None


async def test_finished_job_gets_its_final_state_and_the_stream_ends(
    client: TestClient[Any, Any], run_worker: RunWorker
) -> None:
    task_id = await upload(client, image_bytes((300, 200), "PNG"))
    await run_worker()
    response = await client.get(f"/jobs/{task_id}/events")
    events = await asyncio.wait_for(all_events(response), 5)
    assert len(events) == 1
    assert events[0].data == await status_of(client, task_id)
    assert events[0].data["status"] == "SUCCESS"


async def test_failure_is_streamed_with_its_reason(
    client: TestClient[Any, Any], run_worker: RunWorker
) -> None:
    task_id = await upload(client, image_bytes()[:3000])  # truncated: identified, not decodable
    response = await client.get(f"/jobs/{task_id}/events")
    assert (await next_event(response)) is not None
    await run_worker()
    events = await asyncio.wait_for(all_events(response), 10)
    assert statuses(events) == ["STARTED", "FAILURE"]
    assert [e.kind for e in events] == ["status", "status"], "nothing decoded, no progress"
    assert "thumbnail" in events[-1].data["error"] or "image" in events[-1].data["error"]


async def test_retries_are_streamed_with_their_next_attempt_time(
    client: TestClient[Any, Any], run_worker: RunWorker, aiohttp_server: AiohttpServer
) -> None:
    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503)

    url = await hook_url(aiohttp_server, unavailable)
    task_id = await queue_webhook(client, url, {"n": 1})
    stream = await client.get(f"/jobs/{task_id}/events")
    assert (await next_event(stream)) is not None

    await run_worker()  # job_max_tries is 3 in the test settings
    events = await asyncio.wait_for(all_events(stream), 10)
    assert statuses(events) == ["STARTED", "RETRY", "STARTED", "RETRY", "STARTED", "FAILURE"]
    retries = [e.data for e in events if e.data.get("status") == "RETRY"]
    assert all("503" in retry["error"] and retry["next_attempt_at"] for retry in retries)
    started_again = [e.data for e in events if e.data.get("status") == "STARTED"][1]
    assert "error" not in started_again, "a new attempt drops the previous attempt's error"
    assert "gave up after 3 attempts" in events[-1].data["error"]


async def test_report_job_reports_each_section(
    client: TestClient[Any, Any], run_worker: RunWorker
) -> None:
    response = await client.post("/reports/daily", json={"day": RECENT_DAY})
    task_id = (await response.json())["task_id"]
    stream = await client.get(f"/jobs/{task_id}/events")
    assert (await next_event(stream)) is not None
    await run_worker()
    events = await asyncio.wait_for(all_events(stream), 10)
    steps = [e.data["step"] for e in events if e.kind == "progress"]
    assert steps == ["jobs counted", "users counted", "file written", "no recipients to mail"]
    assert events[-1].data["status"] == "SUCCESS"


async def test_unknown_or_malformed_job_id_is_404_json(client: TestClient[Any, Any]) -> None:
    for job_id in ["0" * 32, "bad id!"]:
        response = await client.get(f"/jobs/{job_id}/events")
        assert response.status == 404
        assert "no task" in (await response.json())["error"]
