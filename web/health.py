"""What ``GET /health`` checks besides Redis: each dependency a resource registers.

A resource opened at start-up (the users database, file storage) registers a check under its
name; ``/health`` runs them all at once, within its time limit, and reports each as "ok" or
"unreachable". Redis is checked apart: without it nothing works (503), while without one of
these the rest still does ("degraded", 200), so a load balancer keeps the process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web

DependencyCheck = Callable[[], Awaitable[None]]  # returns when reachable, raises when not
DependencyState = Literal["ok", "unreachable"]

DEPENDENCY_CHECKS: web.AppKey[dict[str, DependencyCheck]] = web.AppKey("dependency_checks")
# Each check's own limit, inside /health's 2 s (web.views.HEALTH_TIMEOUT): a dependency that
# hangs (a server behind a dropped route) is reported "unreachable", instead of running out
# /health's time, which would report Redis as the one unreachable.
CHECK_TIMEOUT = 1.5


def add_dependency_check(app: web.Application, name: str, check: DependencyCheck) -> None:
    """Have ``/health`` report ``name``: "ok" when ``check()`` returns, else "unreachable"."""
    app.setdefault(DEPENDENCY_CHECKS, {})[name] = check


async def _state(check: DependencyCheck) -> DependencyState:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await check()
    except Exception:  # any failure, a timeout included, means the same here: not usable now
        return "unreachable"
    return "ok"


async def dependency_states(app: web.Application) -> dict[str, DependencyState]:
    """Every registered dependency's state, checked concurrently."""
    checks = app.get(DEPENDENCY_CHECKS, {})
    states = await asyncio.gather(*(_state(check) for check in checks.values()))
    return dict(zip(checks, states, strict=True))
