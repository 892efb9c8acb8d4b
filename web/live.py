"""Live streams (Server-Sent Events): one job's changes, and the dashboard overview's cue.

``GET /jobs/{id}/events`` streams a job's state changes and progress.

The stream subscribes to the job's channel *before* reading its status, so an event published
in between is not lost; it sends that snapshot first, then each change, and ends once the job
has finished (SUCCESS, FAILURE or CANCELLED). While nothing is published it re-reads the status
now and then, which catches outcomes arq records without the tracking wrapper (a killed worker's job
running out of tries, a timeout) and keeps proxies from closing an idle stream.

``GET /dashboard/events`` tells an open overview page when to redraw itself.

Both ride out a Redis outage of up to OUTAGE_LIMIT seconds, a Sentinel failover included:
while Redis does not answer they send keep-alive comments and try again every
RECONNECT_PAUSE; the subscription comes back on whichever server is master then (redis-py
subscribes again as it reconnects), and since what was published meanwhile is lost, the job
stream re-reads the status. A stream that gave up sooner would only make its viewer reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.records import events
from service.records.progress import stored_progress
from service.records.status import JOB_ID_PATTERN, TaskState
from service.store import keys
from web.errors import ApiError
from web.job_control import status_document
from web.keys import REDIS, SETTINGS

RECHECK_SECONDS = 3.0
OVERVIEW_PAUSE = 1.0  # seconds between two "changed" events of the overview stream
DRAIN_LIMIT = 10_000  # announcements skipped at most after a pause, so a flood cannot stall it
FINISHED = {TaskState.SUCCESS, TaskState.FAILURE, TaskState.CANCELLED}
STREAMS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("event_streams")
OUTAGE_LIMIT = 60.0  # seconds without Redis a stream waits through before it ends
RECONNECT_PAUSE = 0.25  # seconds between two tries while Redis does not answer
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


class _Outage:
    """How long one stream has been without Redis."""

    def __init__(self) -> None:
        self.since: float | None = None

    async def failed(self, exc: BaseException) -> None:
        """Pause before the next try; re-raise ``exc`` once the outage lasts too long."""
        now = asyncio.get_running_loop().time()
        if self.since is None:
            self.since = now
        elif now - self.since > OUTAGE_LIMIT:
            raise exc
        await asyncio.sleep(RECONNECT_PAUSE)

    def ended(self) -> None:
        self.since = None


def sse(kind: str, data: dict[str, Any]) -> bytes:
    """One SSE message; JSON never contains a raw newline, so one data line suffices."""
    return f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n".encode()


async def _snapshot(request: web.Request, job_id: str) -> tuple[dict[str, Any] | None, Any]:
    redis = request.app[REDIS]
    status = await status_document(request, job_id)
    raw: bytes | None = await redis.hget(keys.job_meta(job_id), "progress")  # type: ignore[misc]
    progress = stored_progress({"progress": raw.decode()}) if raw else None
    return status, progress


async def _message(pubsub: PubSub, within: float, outage: _Outage) -> dict[str, Any] | None:
    """The next message within ``within`` seconds; None also when Redis does not answer (then
    after a pause, with ``outage.since`` set), so the caller re-reads what it may have missed."""
    try:
        message: dict[str, Any] | None = await pubsub.get_message(
            ignore_subscribe_messages=True, timeout=within
        )
    except REDIS_DOWN as exc:
        await outage.failed(exc)
        return None
    outage.ended()
    return message


async def _next_event(pubsub: PubSub, outage: _Outage) -> tuple[str, dict[str, Any]] | None:
    """The next event from the channel; None after RECHECK_SECONDS of silence, or when
    Redis does not answer."""
    deadline = asyncio.get_running_loop().time() + RECHECK_SECONDS
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        message = await _message(pubsub, left, outage)
        if outage.since is not None:
            return None
        if message is not None and (event := events.decode(message["data"])) is not None:
            return event
    return None


def _merge(status: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """The status document after ``change``; a new attempt drops the last one's error."""
    merged = {**status, **change}
    if change.get("status") == TaskState.STARTED:
        for stale in ("error", "next_attempt_at", "scheduled_for"):
            merged.pop(stale, None)
    return merged


async def _stream(request: web.Request, job_id: str, pubsub: PubSub) -> web.StreamResponse:
    status, progress = await _snapshot(request, job_id)
    if status is None:
        raise ApiError(404, f"no task with id {job_id!r}")
    response = _event_stream()
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):  # the viewer left
        await response.write(sse("status", status))
        if progress is not None and status["status"] not in FINISHED:
            await response.write(sse("progress", progress))
        await _follow(request, job_id, pubsub, response, status)
    return response


async def _follow(
    request: web.Request,
    job_id: str,
    pubsub: PubSub,
    response: web.StreamResponse,
    status: dict[str, Any],
) -> None:
    """Send each change until the job has finished."""
    outage = _Outage()
    while status["status"] not in FINISHED:
        event = await _next_event(pubsub, outage)
        if event is None:
            try:
                fresh, _ = await _snapshot(request, job_id)
            except REDIS_DOWN as exc:
                await response.write(b": waiting for redis\n\n")
                await outage.failed(exc)
                continue
            if fresh is not None and fresh["status"] != status["status"]:
                status = fresh
                await response.write(sse("status", status))
            else:
                await response.write(b": still here\n\n")
            continue
        kind, data = event
        if kind == "status":
            status = data = _merge(status, data)
        await response.write(sse(kind, data))


def _event_stream() -> web.StreamResponse:
    return web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        }
    )


@contextlib.asynccontextmanager
async def _subscribed(
    request: web.Request, channel: str, *, pattern: bool = False
) -> AsyncIterator[PubSub]:
    """A subscription that ends with the request, or at once when the app shuts down."""
    task = asyncio.current_task()
    assert task is not None
    request.app[STREAMS].add(task)
    pubsub = request.app[REDIS].pubsub()
    try:
        await (pubsub.psubscribe(channel) if pattern else pubsub.subscribe(channel))
        yield pubsub
    finally:
        request.app[STREAMS].discard(task)
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def job_events(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["job_id"]
    if not JOB_ID_PATTERN.fullmatch(job_id):
        raise ApiError(404, f"no task with id {job_id!r}")
    async with _subscribed(request, keys.job_events(job_id)) as pubsub:
        return await _stream(request, job_id, pubsub)


async def _queue_signature(request: web.Request) -> tuple[int, ...]:
    """What changes on the overview without a job changing state: jobs queued, workers,
    the queue paused or resumed."""
    async with request.app[REDIS].pipeline(transaction=False) as pipe:
        pipe.zcard(request.app[SETTINGS].queue_name)
        pipe.zcard(keys.workers())
        pipe.exists(keys.paused(request.app[SETTINGS].queue_name))  # the pause banner
        return tuple(await pipe.execute())


async def overview_events(request: web.Request) -> web.StreamResponse:
    """``GET /dashboard/events``: a ``changed`` event whenever the overview would look
    different (a job changed state, the queue or the workers changed), at most one per
    OVERVIEW_PAUSE; the page then fetches itself again. Runs until the viewer leaves."""
    async with _subscribed(request, keys.job_events("*"), pattern=True) as pubsub:
        response = _event_stream()
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the viewer left
            await _watch_overview(request, response, pubsub)
        return response


async def _next_state_change(pubsub: PubSub, outage: _Outage) -> bool:
    """Whether some job changed state (progress steps do not count) within RECHECK_SECONDS;
    also after Redis did not answer, since what was published meanwhile is lost."""
    deadline = asyncio.get_running_loop().time() + RECHECK_SECONDS
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        message = await _message(pubsub, left, outage)
        if outage.since is not None:
            return True
        event = events.decode(message["data"]) if message is not None else None
        if event is not None and event[0] == "status":
            return True
    return False


async def _watch_overview(
    request: web.Request, response: web.StreamResponse, pubsub: PubSub
) -> None:
    await response.write(b": watching\n\n")
    outage = _Outage()
    missed = False  # an outage hid what was published: redraw once the subscription is back
    signature: tuple[int, ...] = ()
    try:
        signature = await _queue_signature(request)
    except REDIS_DOWN:
        missed = True
    while True:
        changed = await _next_state_change(pubsub, outage)
        try:
            latest = await _queue_signature(request)
        except REDIS_DOWN as exc:
            await response.write(b": waiting for redis\n\n")
            await outage.failed(exc)
            continue
        if outage.since is not None:
            missed = True
            await response.write(b": waiting for redis\n\n")
            continue
        if not (changed or missed) and latest == signature:
            await response.write(b": still here\n\n")
            continue
        signature, missed = latest, False
        await response.write(sse("changed", {}))
        await asyncio.sleep(OVERVIEW_PAUSE)  # a burst of changes: one refresh
        for _ in range(DRAIN_LIMIT):
            if await _message(pubsub, 0, outage) is None:
                break


async def close_streams(app: web.Application) -> None:
    """on_shutdown: end open streams now instead of holding the shutdown for their clients."""
    streams = app[STREAMS]
    for task in tuple(streams):
        task.cancel()


def setup_live(app: web.Application) -> None:
    app[STREAMS] = set[asyncio.Task[Any]]()
    app.on_shutdown.append(close_streams)
