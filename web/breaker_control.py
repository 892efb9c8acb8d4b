"""HTTP handlers for the circuit breakers: list them, close one now.

Operator routes: bearer token only (web/auth.py); the dashboard's "close now" button is its
own route (web/dashboard.py), which takes the session cookie with its CSRF rules.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.records import breakers
from service.records.breakers import Breaker
from service.records.times import iso_from_ms, now_ms
from web.errors import ApiError
from web.keys import QUEUES, REDIS

NOT_OPEN = "no circuit breaker is open for this destination"


def describe(breaker: Breaker) -> dict[str, Any]:
    """A breaker as JSON: ``/breakers`` lists them, ``/health`` the open ones."""
    return {
        "destination": breaker.destination,
        "label": breaker.label,
        "state": breaker.state,
        "failures": breaker.failures,
        "opened_at": iso_from_ms(breaker.opened_at),
        "next_probe_at": iso_from_ms(breaker.next_probe),
        "cooldown_seconds": breaker.cooldown,
    }


async def close_or_refuse(request: web.Request) -> str:
    """Close the path's breaker now; 404 when it names none that is open or half-open."""
    destination = request.match_info["destination"]
    if not breakers.DESTINATION_PATTERN.fullmatch(destination):
        raise ApiError(404, NOT_OPEN)
    closed = await breakers.close(
        request.app[REDIS], destination, request.app[QUEUES].all_keys(), now_ms()
    )
    if not closed:
        raise ApiError(404, NOT_OPEN)
    return destination


async def list_breakers(request: web.Request) -> web.Response:
    """``GET /breakers``: every tracked destination's breaker, open ones first."""
    found = await breakers.tracked(request.app[REDIS])
    return web.json_response({"breakers": [describe(breaker) for breaker in found]})


async def close_breaker(request: web.Request) -> web.Response:
    """``POST /breakers/{destination}/close``: its jobs run again at once, failures forgotten."""
    destination = await close_or_refuse(request)
    return web.json_response(
        {"destination": destination, "label": breakers.describe(destination), "state": "closed"}
    )
