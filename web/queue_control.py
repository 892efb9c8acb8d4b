"""HTTP handlers for the whole queue: its state, pause, resume and drain (service.queue.pause).

Operator routes: bearer token only (web/auth.py); the dashboard's buttons are its own routes
(web/dashboard.py), which take the session cookie with its CSRF rules.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.engine.queue_counts import queue_counts
from service.queue import pause
from service.queue.pause import PauseState
from service.records.times import iso_from_ms, now_ms
from web.errors import ApiError
from web.keys import QUEUES, REDIS, SETTINGS

DRAIN_DEFAULT = 30  # seconds POST /queue/drain waits for running jobs, unless ?timeout= says
DRAIN_MAX = 120  # longer than most proxies let a request wait: call again instead


def describe(state: PauseState, running: int, queued: int) -> dict[str, Any]:
    paused_at = iso_from_ms(state.paused_at_ms)
    return {"paused": state.paused, "paused_at": paused_at, "running": running, "queued": queued}


async def _answer(
    request: web.Request,
    state: PauseState,
    running: int | None = None,
    drained: bool | None = None,
) -> web.Response:
    """The queue's state; ``running`` counted now unless given, ``drained`` for a drain;
    ``queued`` as /health says it: waiting + deferred, running jobs not included."""
    counts = await queue_counts(request.app[REDIS], request.app[QUEUES].all_keys(), now_ms())
    body = describe(state, counts.running if running is None else running, counts.queued)
    if drained is not None:
        body["drained"] = drained
    return web.json_response(body, status=200 if drained in (None, True) else 202)


async def queue_state(request: web.Request) -> web.Response:
    """``GET /queue``: paused or not, jobs running, jobs queued."""
    redis, queue_name = request.app[REDIS], request.app[SETTINGS].queue_name
    return await _answer(request, await pause.pause_state(redis, queue_name))


async def pause_queue(request: web.Request) -> web.Response:
    """``POST /queue/pause``: workers take no new job; running ones finish."""
    redis, queue_name = request.app[REDIS], request.app[SETTINGS].queue_name
    return await _answer(request, await pause.pause(redis, queue_name))


async def resume_queue(request: web.Request) -> web.Response:
    """``POST /queue/resume``: workers take jobs again."""
    redis, queue_name = request.app[REDIS], request.app[SETTINGS].queue_name
    await pause.resume(redis, queue_name)
    return await _answer(request, PauseState(None))


def _drain_timeout(request: web.Request) -> int:
    if len(request.query.getall("timeout", ())) > 1:
        raise ApiError(400, "give timeout once")
    raw = request.query.get("timeout", str(DRAIN_DEFAULT))
    if not (raw.isascii() and raw.isdigit()) or int(raw) > DRAIN_MAX:
        raise ApiError(400, f"timeout must be a whole number of seconds from 0 to {DRAIN_MAX}")
    return int(raw)


async def drain_queue(request: web.Request) -> web.Response:
    """``POST /queue/drain``: pause, then answer once nothing runs (200, ``drained``), or
    after ``timeout`` seconds with jobs still running (202: call again)."""
    within = _drain_timeout(request)
    redis, queue_name = request.app[REDIS], request.app[SETTINGS].queue_name
    drained = await pause.drain(
        redis, queue_name, within=within, queues=request.app[QUEUES].all_keys()
    )
    return await _answer(request, drained.pause, drained.running, drained.drained)
