"""``GET /stats/throughput`` and ``GET /stats/functions``: the overview's graphs as JSON."""

from __future__ import annotations

from typing import cast, get_args

from aiohttp import web

from service.dashboard.graphs import functions, throughput_document
from service.records.throughput import Span
from web.errors import ApiError
from web.keys import REDIS, REGISTRY

RANGES: tuple[str, ...] = get_args(Span)


async def throughput(request: web.Request) -> web.Response:
    """Jobs completed and failed per step over ``range`` (5m per second, 24h per minute, 30d
    per hour)."""
    if len(request.query.getall("range", ())) > 1:
        raise ApiError(400, "give range once")
    span = request.query.get("range", "5m")
    if span not in RANGES:
        raise ApiError(400, f"range must be one of {', '.join(RANGES)}")
    return web.json_response(await throughput_document(request.app[REDIS], cast(Span, span)))


async def by_function(request: web.Request) -> web.Response:
    """Each function's last hour: jobs, failure rate, duration p50/p95, queue wait p95."""
    names = [job.name for job in request.app[REGISTRY]]
    return web.json_response(await functions(request.app[REDIS], names))
