"""HTTP handlers for the cron schedules: list them, pause and resume one.

Operator routes: bearer token only (web/auth.py); the dashboard's buttons are its own routes
(web/dashboard.py), which take the session cookie with its CSRF rules.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.dashboard.crons import CronSchedule, UnknownCronError, cron_schedules, find
from service.records import schedules
from service.records.times import iso_from_ms, now_ms
from web.errors import ApiError
from web.keys import REDIS, REGISTRY, SETTINGS


def _describe(cron: CronSchedule) -> dict[str, Any]:
    paused_at = None if cron.paused_at is None else round(cron.paused_at * 1000)
    return {
        "name": cron.name,
        "function": cron.function,
        "paused": cron.paused_at is not None,
        "paused_at": iso_from_ms(paused_at),
        "next_runs": [moment.isoformat(timespec="seconds") for moment in cron.next_runs],
        "last_runs": [
            {
                "job_id": run.job_id,
                "outcome": run.outcome,
                "started_at": iso_from_ms(run.started_at),
                "finished_at": iso_from_ms(run.finished_at),
                "duration_ms": run.duration_ms,
                "error": run.error,
            }
            for run in cron.runs
        ],
    }


def cron_name_from(request: web.Request) -> str:
    """The path's schedule name, if the registry declares it; else 404."""
    name = request.match_info["name"]
    try:
        find(request.app[REGISTRY], name)
    except UnknownCronError:
        raise ApiError(404, "no cron schedule has this name") from None
    return name


async def _one(request: web.Request, name: str) -> web.Response:
    app = request.app
    crons = await cron_schedules(app[REDIS], app[SETTINGS], app[REGISTRY])
    return web.json_response(next(_describe(cron) for cron in crons if cron.name == name))


async def list_crons(request: web.Request) -> web.Response:
    """``GET /crons``: every schedule, its pause, next five runs and last twenty."""
    app = request.app
    crons = await cron_schedules(app[REDIS], app[SETTINGS], app[REGISTRY])
    timezone = app[SETTINGS].cron_timezone
    return web.json_response({"timezone": timezone, "crons": [_describe(c) for c in crons]})


async def pause_cron(request: web.Request) -> web.Response:
    """``POST /crons/{name}/pause``: every worker skips this schedule's runs until resumed."""
    name = cron_name_from(request)
    await schedules.pause(request.app[REDIS], name, now_ms())
    return await _one(request, name)


async def resume_cron(request: web.Request) -> web.Response:
    """``POST /crons/{name}/resume``: the schedule runs again from its next time."""
    name = cron_name_from(request)
    await schedules.resume(request.app[REDIS], name)
    return await _one(request, name)
