"""The dashboard's search page: find jobs, then Retry, Cancel or Delete them all, confirmed.

A bulk button does not act: it opens a confirmation page that says how many jobs the search
matches now and lists them; its Confirm button posts that count, and the action is refused
(the page shown again with the new count) if the search has changed meanwhile.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from service.queue.bulk import BulkAction, CountChangedError, bulk_act, matching
from service.records.search import JobState
from web.errors import ApiError
from web.job_search import FILTERS, next_link, page_params, run_search
from web.job_search import search_query as parse_query
from web.keys import QUEUES, REDIS, REGISTRY, SETTINGS
from web.pages import render

PAGE = "/dashboard/search"
VERBS = {BulkAction.RETRY: "Retry", BulkAction.CANCEL: "Cancel", BulkAction.DELETE: "Delete"}


def _context(filters: dict[str, str | None], request: web.Request) -> dict[str, Any]:
    """What both pages show of the form: the filters as given, the choices."""
    return {
        "filters": {name: value or "" for name, value in filters.items()},
        "functions": sorted(job.name for job in request.app[REGISTRY]),
        "states": [state.value for state in JobState],
        "verbs": {action.value: verb for action, verb in VERBS.items()},
        "hidden": {name: value for name, value in filters.items() if value},
    }


def _filled(filters: dict[str, str | None]) -> dict[str, str | None]:
    """An empty form field means no filter, as a browser sends every field."""
    return {name: value or None for name, value in filters.items()}


async def search(request: web.Request) -> web.Response:
    """Every job newest first, or those the filters match; after a bulk action, what it did."""
    filters = _filled({name: request.query.get(name) for name in FILTERS})
    context = _context(filters, request)
    notice = {name: request.query.get(name, "") for name in ("action", "done", "skipped")}
    if notice["action"] not in context["verbs"]:
        notice = {}
    try:
        query = parse_query(filters, request.app[REGISTRY])
        limit, cursor = page_params(request)
    except ApiError as exc:
        return render(
            request,
            "search.html",
            status=400,
            page=None,
            more="",
            error=exc.message,
            notice={},
            **context,
        )
    page = await run_search(request, query, limit, cursor)
    more = next_link(PAGE, filters, limit, page)
    return render(request, "search.html", page=page, more=more, error="", notice=notice, **context)


async def confirm(request: web.Request) -> web.Response:
    filters = _filled({name: request.query.get(name) for name in FILTERS})
    action = _action(request.query.get("action"))
    query = parse_query(filters, request.app[REGISTRY])
    found = await matching(request.app[REDIS], request.app[SETTINGS], query, request.app[QUEUES])
    return render(
        request,
        "search_confirm.html",
        action=action.value,
        verb=VERBS[action],
        jobs=found.jobs,
        more=found.more,
        changed=None,
        **_context(filters, request),
    )


async def bulk(request: web.Request) -> web.Response:
    form = await request.post()
    filters = _filled({name: _text(form.get(name)) for name in FILTERS})
    action = _action(_text(form.get("action")))
    expected = _text(form.get("expected")) or ""
    if not expected.isdigit():
        raise ApiError(400, "expected must be the number of jobs the confirmation showed")
    query = parse_query(filters, request.app[REGISTRY])
    redis, settings = request.app[REDIS], request.app[SETTINGS]
    try:
        outcome = await bulk_act(redis, settings, query, action, int(expected), request.app[QUEUES])
    except CountChangedError as exc:
        found = await matching(redis, settings, query, request.app[QUEUES])
        return render(
            request,
            "search_confirm.html",
            status=409,
            action=action.value,
            verb=VERBS[action],
            jobs=found.jobs,
            more=found.more,
            changed=exc,
            **_context(filters, request),
        )
    given = {name: value for name, value in filters.items() if value}
    report = {"action": action.value, "done": len(outcome.done), "skipped": len(outcome.skipped)}
    return web.Response(status=303, headers={"Location": f"{PAGE}?{urlencode(given | report)}"})


def _action(raw: str | None) -> BulkAction:
    try:
        return BulkAction(raw or "")
    except ValueError:
        raise ApiError(400, "action must be retry, cancel or delete") from None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
