"""GET /jobs/{id}/events: a snapshot first, then every state change and progress step, then
the stream ends when the job has finished. Real worker, real Redis pub/sub, real HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from typing import Any

import aiohttp
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from pytest_aiohttp import AiohttpServer
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.store import keys
from settings import Settings
from tests.conftest import (
    AUTH_HEADERS,
    TEST_API_TOKEN,
    ClientFactory,
    RunWorker,
    accepted_task,
    status_of,
)
from tests.days import RECENT_DAY
from tests.images import image_bytes
from tests.sse import Event, all_events, next_event
from tests.waiting import wait_until
from tests.webhook_targets import hook_url, queue_webhook
from web import live
from web.app import create_app


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


OTHER_TOKEN = "other-token-0123456789abcdef"


async def _stream_app(
    aiohttp_client: ClientFactory, settings: Settings, **limits: Any
) -> TestClient[Any, Any]:
    changed = settings.model_copy(update={"api_tokens": (TEST_API_TOKEN, OTHER_TOKEN), **limits})
    return await aiohttp_client(create_app(changed), headers=AUTH_HEADERS)


async def _opened(client: TestClient[Any, Any], path: str, token: str) -> ClientResponse:
    response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200, await response.text()
    await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)  # its first event or comment
    return response


async def test_streams_over_a_tokens_cap_get_429_until_one_closes(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    client = await _stream_app(aiohttp_client, settings, live_streams_per_token=2)
    task_id = await accepted_task(client, "/events", {"event": {}})
    first = await _opened(client, f"/jobs/{task_id}/events", TEST_API_TOKEN)
    await _opened(client, "/dashboard/events", TEST_API_TOKEN)

    refused = await client.get(f"/jobs/{task_id}/events")
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "5"
    assert "too many live streams open for this token" in (await refused.json())["error"]
    assert (await client.get(f"/task-status/{task_id}")).status == 200  # only streams count
    await _opened(client, "/dashboard/events", OTHER_TOKEN)  # another token has its own

    first.close()  # the server notices at its next write (a comment every 3 s at most)
    reopened: list[ClientResponse] = []

    async def accepted_again() -> bool:
        response = await client.get(f"/jobs/{task_id}/events")
        if response.status == 200:
            reopened.append(response)
        return response.status == 200

    await wait_until(accepted_again, within=10, interval=0.2)


async def test_streams_over_the_process_cap_get_429(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    client = await _stream_app(aiohttp_client, settings, live_streams_per_process=2)
    await _opened(client, "/dashboard/events", TEST_API_TOKEN)
    await _opened(client, "/dashboard/events", OTHER_TOKEN)
    refused = await client.get("/dashboard/events")
    assert refused.status == 429
    assert "in this process" in (await refused.json())["error"]


async def test_a_stream_without_events_closes_after_the_idle_limit(
    aiohttp_client: ClientFactory,
    settings: Settings,
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """On a private redis-server: channels are server-wide, whatever the database, so the
    overview's pattern would hear the jobs of every other suite on a shared one."""
    own = Redis.from_url(private_redis[0])

    async def answers() -> bool:
        try:
            return bool(await own.ping())
        except (RedisError, OSError):
            return False

    await wait_until(answers, within=10)
    await own.aclose()
    quiet = settings.model_copy(update={"redis_url": private_redis[0]})
    client = await _stream_app(aiohttp_client, quiet, live_stream_idle_seconds=1)
    task_id = await accepted_task(client, "/events", {"event": {}})  # no worker: stays PENDING
    started = time.monotonic()
    stream = await client.get(f"/jobs/{task_id}/events")
    events = await asyncio.wait_for(all_events(stream), 10)
    assert statuses(events) == ["PENDING"]
    # idle is checked between two re-reads of the status, 3 s apart
    assert time.monotonic() - started < 1 + live.RECHECK_SECONDS + 2
    overview = await client.get("/dashboard/events")
    assert await asyncio.wait_for(all_events(overview), 10) == []  # comments only, then closed


async def test_a_viewer_that_stops_reading_is_closed(
    client: TestClient[Any, Any], redis: ArqRedis
) -> None:
    task_id = await accepted_task(client, "/events", {"event": {}})  # no worker: stays PENDING
    stream = await client.get(f"/jobs/{task_id}/events")  # then never read again
    assert (await next_event(stream)) is not None
    streams = client.app[live.STREAMS].tasks
    assert len(streams) == 1
    step = "x" * 64 * 1024
    big = json.dumps({"kind": "progress", "data": {"step": step, "done": 1, "total": 2}})
    for _ in range(400):  # 25 MiB: more than the sockets' buffers and the stream's queue hold
        await redis.publish(keys.job_events(task_id, keys.database_of(redis)), big)
        if not streams:
            break

    async def closed() -> bool:
        return not streams

    # its writes wait on a full socket; meanwhile its queue is capped (tests/test_subscriptions.py)
    await wait_until(closed, within=live.WRITE_LIMIT + 10, interval=0.1)
    stream.close()
