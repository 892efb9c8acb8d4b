"""Rendering the dashboard's HTML: Jinja2 templates with autoescaping, and strict headers.

Job arguments, results and errors are attacker-controlled text, so every value is escaped by
the template engine (autoescape on for every template) and the Content-Security-Policy
forbids inline scripts and styles: even a missed escape could not run script.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from web.keys import SETTINGS
from web.sessions import SESSION

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

TEMPLATES = web.AppKey("templates", jinja2.Environment)
TEMPLATE_DIR = Path(__file__).parent / "templates"


def ago(seconds_since_epoch: float | None, now: float | None = None) -> str:
    if seconds_since_epoch is None:
        return "—"
    return duration((now or time.time()) - seconds_since_epoch) + " ago"


def until(seconds_since_epoch: float | None, now: float | None = None) -> str:
    if seconds_since_epoch is None:
        return "—"
    left = seconds_since_epoch - (now or time.time())
    return "now" if left <= 0 else "in " + duration(left)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    if seconds < 86_400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86_400)} d {int(seconds % 86_400 // 3600)} h"


def latency(seconds: float | None) -> str:
    """A percentile as the per-function table shows it: sub-millisecond ones in microseconds."""
    if seconds is not None and seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    return duration(seconds)


def clock(moment: float | datetime | str | None) -> str:
    """A timestamp as ``2026-11-24 01:02:03 UTC`` (datetimes keep their own zone)."""
    if not moment:  # None, "", or a field the document does not have
        return "—"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


def short_clock(moment: datetime) -> str:
    """A near date as ``Nov 25 00:00 UTC``, for narrow table cells."""
    return moment.strftime("%b %d %H:%M %Z")


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)


def short_id(job_id: str) -> str:
    return job_id if len(job_id) <= 14 else job_id[:12] + "…"


def _read_templates() -> jinja2.FunctionLoader:
    """Every template's source, read now: rendering a page never touches the disk."""
    sources = {
        path.name: (path.read_text("utf-8"), str(path)) for path in TEMPLATE_DIR.glob("*.html")
    }

    def load(name: str) -> tuple[str, str, Callable[[], bool]] | None:
        if name not in sources:
            return None
        source, filename = sources[name]
        return source, filename, lambda: True  # read once: always up to date

    return jinja2.FunctionLoader(load)


def make_environment() -> jinja2.Environment:
    """The dashboard's Jinja2 environment; it reads the templates, so it runs off the loop."""
    env = jinja2.Environment(
        loader=_read_templates(),
        autoescape=True,  # every template, whatever its file name
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        ago=ago, until=until, duration=duration, clock=clock, pretty_json=pretty_json
    )
    env.filters["short_id"] = short_id
    env.filters["short_clock"] = short_clock
    env.filters["latency"] = latency
    return env


def render(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    """The page ``template`` for this request, with the session's CSRF token at hand."""
    session = request.get(SESSION)
    settings = request.app[SETTINGS]
    html = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(
            csrf_token=session.csrf if session else "",
            signed_in=session is not None,
            mail_page=settings.dashboard_mail_page,
            path=request.path,
            now=time.time(),
            **context,
        )
    )
    return web.Response(
        text=html, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )
