"""Every request gets an id, one JSON log line and its HTTP metrics; the id follows its jobs.

This middleware is the outermost one, so the status it logs and counts is the one the client
got, after the error and auth middlewares had their say.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import MappingProxyType

from aiohttp import web
from aiohttp.typedefs import Handler

from service.observability.origin import Origin, current_origin, log_fields, request_id_from
from web.keys import WEB_METRICS
from web.metrics import method_label, route_label

logger = logging.getLogger("jobservice.requests")

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID = web.RequestKey("request_id", str)
CLIENT_CLOSED = 499  # nginx's convention: the client went away before the answer


@web.middleware
async def observe_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID] = request_id
    metrics = request.app[WEB_METRICS]
    origin_token = current_origin.set(Origin(request_id, metrics.count_enqueued))
    fields_token = log_fields.set(MappingProxyType({"request_id": request_id}))
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        seconds = time.perf_counter() - started
        method, route = method_label(request), route_label(request)
        metrics.observe_request(method, route, status, seconds)
        logger.log(
            logging.WARNING if status >= 500 else logging.INFO,
            "%s %s %d",
            request.method,
            request.path,
            status,
            extra={
                "event": "request",
                "method": method,
                "route": route,
                "path": request.path,
                "status": status,
                "duration_ms": round(seconds * 1000, 1),
            },
        )
        log_fields.reset(fields_token)
        current_origin.reset(origin_token)


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Put the request's id on every answer, streamed and error answers included."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
