"""Live streams (Server-Sent Events): one job's changes, and the dashboard overview's cue.

``GET /jobs/{id}/events`` streams a job's state changes and progress.

The stream subscribes to the job's channel *before* reading its status, so an event published
in between is not lost; it sends that snapshot first, then each change, and ends once the job
has finished (SUCCESS, FAILURE or CANCELLED). While nothing is published it re-reads the status
now and then, which catches outcomes arq records without the tracking wrapper (a killed worker's job
running out of tries, a timeout) and keeps proxies from closing an idle stream.

``GET /dashboard/events`` tells an open overview page when to redraw itself.

Every stream of a process listens through the process's one shared subscription
(service.store.subscriptions), so streams cost memory, not Redis connections; their number is
capped per token and per process (``LIVE_STREAMS_PER_TOKEN``, ``LIVE_STREAMS_PER_PROCESS``:
429 beyond). A stream that sends no event for ``LIVE_STREAM_IDLE_SECONDS`` is closed (the
browser's EventSource reconnects), and so is one whose viewer does not read: past its queue
of pending events, or a write that waits more than WRITE_LIMIT seconds.

Both ride out a Redis outage of up to OUTAGE_LIMIT seconds, a Sentinel failover included:
while Redis does not answer they send keep-alive comments; the shared subscription comes back
on whichever server is master then, and since what was published meanwhile is lost, the job
stream re-reads the status and the overview redraws. A stream that gave up sooner would only
make its viewer reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from service.records import events
from service.records.progress import stored_progress
from service.records.status import JOB_ID_PATTERN, TaskState
from service.store import keys
from service.store.subscriptions import REDIS_DOWN, Listener, SharedSubscriptions
from web.auth import TOKEN_ID
from web.errors import ApiError
from web.job_control import status_document
from web.keys import QUEUES, REDIS, SETTINGS, SUBSCRIPTIONS

RECHECK_SECONDS = 3.0
OVERVIEW_PAUSE = 1.0  # seconds between two "changed" events of the overview stream
FINISHED = {TaskState.SUCCESS, TaskState.FAILURE, TaskState.CANCELLED}
OUTAGE_LIMIT = 60.0  # seconds without Redis a stream waits through before it ends
RECONNECT_PAUSE = 0.25  # seconds between two tries while Redis does not answer
JOB_QUEUE = 64  # events a job stream may have waiting; a viewer further behind is closed
OVERVIEW_QUEUE = 256  # the overview only needs to know that something changed
WRITE_LIMIT = 10.0  # seconds one write may wait for a viewer that does not read
FULL_RETRY_AFTER = "5"  # seconds a client refused for too many streams is told to wait


class _Streams:
    """The streams open in this process, per token too, and their caps."""

    def __init__(self, per_token: int, per_process: int) -> None:
        self.per_token = per_token
        self.per_process = per_process
        self.tasks: set[asyncio.Task[Any]] = set()
        self.by_token: dict[str, int] = {}


STREAMS = web.AppKey("event_streams", _Streams)


@contextlib.contextmanager
def _admitted(request: web.Request) -> Iterator[None]:
    """Count the stream for its token and the process, or refuse it with 429."""
    streams = request.app[STREAMS]
    token = request.get(TOKEN_ID, "-")
    if len(streams.tasks) >= streams.per_process:
        raise ApiError(
            429,
            f"too many live streams open in this process (limit: {streams.per_process})",
            {"Retry-After": FULL_RETRY_AFTER},
        )
    if streams.by_token.get(token, 0) >= streams.per_token:
        raise ApiError(
            429,
            f"too many live streams open for this token (limit: {streams.per_token}); "
            "close some first",
            {"Retry-After": FULL_RETRY_AFTER},
        )
    task = asyncio.current_task()
    assert task is not None
    streams.tasks.add(task)
    streams.by_token[token] = streams.by_token.get(token, 0) + 1
    try:
        yield
    finally:
        streams.tasks.discard(task)
        if (left := streams.by_token[token] - 1) > 0:
            streams.by_token[token] = left
        else:
            del streams.by_token[token]


class _Viewer:
    """One open stream's writing side: events, keep-alive comments, and when to stop."""

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.response = response
        self.loop = asyncio.get_running_loop()
        self.idle_limit = request.app[SETTINGS].live_stream_idle_seconds
        self.last_event = self.loop.time()

    async def event(self, kind: str, data: dict[str, Any]) -> None:
        await self._write(sse(kind, data))
        self.last_event = self.loop.time()

    async def comment(self, text: str) -> None:
        await self._write(f": {text}\n\n".encode())

    def idle(self) -> bool:
        return self.loop.time() - self.last_event > self.idle_limit

    async def _write(self, data: bytes) -> None:
        async with asyncio.timeout(WRITE_LIMIT):  # TimeoutError: the viewer stopped reading
            await self.response.write(data)


def sse(kind: str, data: dict[str, Any]) -> bytes:
    """One SSE message; JSON never contains a raw newline, so one data line suffices."""
    return f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def _outage_over_limit(hub: SharedSubscriptions) -> bool:
    down = hub.down_since
    return down is not None and asyncio.get_running_loop().time() - down > OUTAGE_LIMIT


async def _snapshot(request: web.Request, job_id: str) -> tuple[dict[str, Any] | None, Any]:
    redis = request.app[REDIS]
    status = await status_document(request, job_id)
    raw: bytes | None = await redis.hget(keys.job_meta(job_id), "progress")  # type: ignore[misc]
    progress = stored_progress({"progress": raw.decode()}) if raw else None
    return status, progress


async def _next_event(listener: Listener) -> tuple[str, dict[str, Any]] | None:
    """The next event from the channel; None after RECHECK_SECONDS of silence, or once the
    listener is marked missed or overflowed (the caller looks at which)."""
    deadline = asyncio.get_running_loop().time() + RECHECK_SECONDS
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        data = await listener.get(left)
        if data is None:
            return None
        if (event := events.decode(data)) is not None:
            return event
    return None


def _merge(status: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """The status document after ``change``; a new attempt drops the last one's error."""
    merged = {**status, **change}
    if change.get("status") == TaskState.STARTED:
        for stale in ("error", "next_attempt_at", "scheduled_for", "waiting_for"):
            merged.pop(stale, None)
    return merged


async def _stream(request: web.Request, job_id: str, listener: Listener) -> web.StreamResponse:
    status, progress = await _snapshot(request, job_id)
    if status is None:
        raise ApiError(404, f"no task with id {job_id!r}")
    response = _event_stream()
    await response.prepare(request)
    viewer = _Viewer(request, response)
    # the viewer left, or stopped reading (TimeoutError from a write): end the stream
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        await viewer.event("status", status)
        if progress is not None and status["status"] not in FINISHED:
            await viewer.event("progress", progress)
        await _follow(request, job_id, listener, viewer, status)
    return response


async def _follow(
    request: web.Request,
    job_id: str,
    listener: Listener,
    viewer: _Viewer,
    status: dict[str, Any],
) -> None:
    """Send each change until the job has finished, the stream idles out, or its viewer
    falls behind (it reconnects and gets a fresh snapshot)."""
    hub = request.app[SUBSCRIPTIONS]
    while status["status"] not in FINISHED and not viewer.idle():
        event = await _next_event(listener)
        if listener.overflowed or _outage_over_limit(hub):
            return
        if event is None:
            listener.missed = False  # the re-read below covers what the gap hid
            try:
                fresh, _ = await _snapshot(request, job_id)
            except REDIS_DOWN:
                await viewer.comment("waiting for redis")
                await asyncio.sleep(RECONNECT_PAUSE)
                continue
            if fresh is not None and fresh["status"] != status["status"]:
                status = fresh
                await viewer.event("status", status)
            else:
                await viewer.comment("still here")
            continue
        kind, data = event
        if kind == "status":
            status = data = _merge(status, data)
        await viewer.event(kind, data)


def _event_stream() -> web.StreamResponse:
    return web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        }
    )


async def job_events(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["job_id"]
    if not JOB_ID_PATTERN.fullmatch(job_id):
        raise ApiError(404, f"no task with id {job_id!r}")
    hub = request.app[SUBSCRIPTIONS]
    confirm = request.app[SETTINGS].redis_socket_timeout
    with _admitted(request):
        channel = keys.job_events(job_id, keys.database_of(request.app[REDIS]))
        async with hub.listen(channel, capacity=JOB_QUEUE, confirm_within=confirm) as listener:
            return await _stream(request, job_id, listener)


async def _queue_signature(request: web.Request) -> tuple[int, ...]:
    """What changes on the overview without a job changing state: jobs queued, workers,
    the queue paused or resumed."""
    async with request.app[REDIS].pipeline(transaction=False) as pipe:
        pipe.zcard(keys.workers())
        pipe.exists(keys.paused(request.app[SETTINGS].queue_name))  # the pause banner
        for queue_key in request.app[QUEUES].all_keys():  # every named queue and priority
            pipe.zcard(queue_key)
        return tuple(await pipe.execute())


async def overview_events(request: web.Request) -> web.StreamResponse:
    """``GET /dashboard/events``: a ``changed`` event whenever the overview would look
    different (a job changed state, the queue or the workers changed), at most one per
    OVERVIEW_PAUSE; the page then fetches itself again. Runs until the viewer leaves or
    the stream idles out."""
    hub = request.app[SUBSCRIPTIONS]
    with _admitted(request):
        async with hub.listen(
            keys.job_events("*", keys.database_of(request.app[REDIS])),
            capacity=OVERVIEW_QUEUE,
            pattern=True,
            confirm_within=None,
        ) as listener:
            response = _event_stream()
            await response.prepare(request)
            viewer = _Viewer(request, response)
            with contextlib.suppress(ConnectionResetError, TimeoutError):  # the viewer left
                await _watch_overview(request, viewer, listener)
            return response


async def _next_state_change(listener: Listener) -> bool:
    """Whether some job changed state (progress steps do not count) within RECHECK_SECONDS,
    or may have (the listener fell behind, or its subscription was lost and is back)."""
    deadline = asyncio.get_running_loop().time() + RECHECK_SECONDS
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        data = await listener.get(left)
        if listener.overflowed or listener.missed:
            return True
        event = events.decode(data) if data is not None else None
        if event is not None and event[0] in ("status", "graphs", "breakers"):  # counts, breakers
            return True
    return False


async def _changed_meanwhile(listener: Listener) -> bool:
    """Whether some job changed state (or new graph counts came) during the pause after a
    redraw, which that redraw could not show; the backlog is read and forgotten."""
    changed = listener.overflowed or listener.missed
    for _ in range(OVERVIEW_QUEUE):
        data = await listener.get(0)
        if data is None:
            break
        event = events.decode(data)
        changed = changed or (event is not None and event[0] in ("status", "graphs", "breakers"))
    listener.clear()
    return changed


async def _watch_overview(request: web.Request, viewer: _Viewer, listener: Listener) -> None:
    hub = request.app[SUBSCRIPTIONS]
    await viewer.comment("watching")
    missed = False  # an outage hid what was published: redraw once Redis is back
    signature: tuple[int, ...] = ()
    try:
        signature = await _queue_signature(request)
    except REDIS_DOWN:
        missed = True
    while not viewer.idle() and not _outage_over_limit(hub):
        changed = missed or await _next_state_change(listener)
        try:
            latest = await _queue_signature(request)
        except REDIS_DOWN:
            missed = True
            await viewer.comment("waiting for redis")
            await asyncio.sleep(RECONNECT_PAUSE)
            continue
        if hub.down_since is not None:
            missed = True
            await viewer.comment("waiting for redis")
            continue
        if not (changed or missed) and latest == signature:
            await viewer.comment("still here")
            continue
        signature, missed = latest, False
        await viewer.event("changed", {})
        await asyncio.sleep(OVERVIEW_PAUSE)  # a burst of changes: one refresh a pause
        missed = await _changed_meanwhile(listener)


async def close_streams(app: web.Application) -> None:
    """on_shutdown: end open streams now instead of holding the shutdown for their clients."""
    for task in tuple(app[STREAMS].tasks):
        task.cancel()


def setup_live(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[STREAMS] = _Streams(settings.live_streams_per_token, settings.live_streams_per_process)
    app.on_shutdown.append(close_streams)
