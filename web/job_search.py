"""``GET /jobs`` (job search) and ``POST /jobs/bulk`` (Retry, Cancel or Delete what it finds).

Both take the same filters, as query parameters or as fields of the JSON body, checked here
into a :class:`SearchQuery`: anything malformed is a 400 naming it, before Redis is asked.
What a search and a bulk action do lives in service.records.search and service.queue.bulk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from service.queue.bulk import BulkAction, CountChangedError, bulk_act
from service.records.search import (
    BadCursorError,
    Cursor,
    Found,
    JobState,
    SearchPage,
    SearchQuery,
    search,
)
from service.records.search_index import normalize_key
from service.records.times import iso_from_ms
from service.runtime import Registry
from web.errors import ApiError
from web.keys import QUEUES, REDIS, REGISTRY, SETTINGS
from web.schemas import BulkRequest, parse_json

FILTERS = ("function", "state", "key", "prefix", "since", "until")
PAGING = ("limit", "cursor")
DEFAULT_PAGE = 20
MAX_PAGE = 100
PREFIX = re.compile(r"[A-Za-z0-9:_.\-]{1,200}")
STATES = ", ".join(state.value for state in JobState)
EXAMPLE = "2026-12-03T09:00:00+00:00"


def _time_ms(name: str, raw: str) -> int:
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ApiError(400, f"{name} must be an RFC 3339 time with its offset, e.g. {EXAMPLE}")
    return int(moment.timestamp() * 1000)


def _states(raw: str) -> frozenset[JobState]:
    try:
        return frozenset(JobState(part.strip()) for part in raw.split(","))
    except ValueError:
        raise ApiError(400, f"state must be one or more (comma-separated) of {STATES}") from None


def search_query(filters: Mapping[str, str | None], registry: Registry) -> SearchQuery:
    """The filters given (query parameters or body fields) as a query; 400 for a bad one."""
    given = {name: value for name, value in filters.items() if value is not None}
    function = given.get("function")
    if function is not None and function not in registry:
        raise ApiError(400, f"function must be a declared job's name, not {function!r}")
    key = None
    if "key" in given:
        key = normalize_key(given["key"])
        if not key:
            raise ApiError(400, "key must be 1-320 printable characters (an address, a host...)")
    prefix = given.get("prefix")
    if prefix is not None and not PREFIX.fullmatch(prefix):
        raise ApiError(400, "prefix must be 1-200 of the characters a task id holds")
    since = _time_ms("since", given["since"]) if "since" in given else None
    until = _time_ms("until", given["until"]) if "until" in given else None
    if since is not None and until is not None and since > until:
        raise ApiError(400, "since must not be after until")
    states = _states(given["state"]) if "state" in given else frozenset()
    return SearchQuery(function, states, key, prefix, since, until)


def query_filters(request: web.Request) -> dict[str, str | None]:
    """The filters among the query parameters; 400 for an unknown or repeated one."""
    for name in request.query:
        if name not in FILTERS and name not in PAGING:
            known = ", ".join(FILTERS + PAGING)
            raise ApiError(400, f"unknown parameter {name!r}: the parameters are {known}")
        if len(request.query.getall(name)) > 1:
            raise ApiError(400, f"give {name} once")
    return {name: request.query.get(name) for name in FILTERS}


def page_params(request: web.Request) -> tuple[int, Cursor | None]:
    """``limit`` (1-100) and ``cursor`` (from a previous page's ``next``); 400 when bad."""
    raw = request.query.get("limit", str(DEFAULT_PAGE))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise ApiError(400, f"limit must be a whole number from 1 to {MAX_PAGE}")
    cursor = None
    if "cursor" in request.query:
        try:
            cursor = Cursor.decode(request.query["cursor"])
        except BadCursorError:
            raise ApiError(400, "cursor must be one a previous page gave as next") from None
    return int(raw), cursor


def describe(job: Found) -> dict[str, Any]:
    return {
        "task_id": job.job_id,
        "function": job.function,
        "state": job.state.value,
        "enqueued_at": iso_from_ms(job.enqueued_ms),
    }


def next_link(path: str, filters: Mapping[str, str | None], limit: int, page: SearchPage) -> str:
    """The link to the next page, or '' when there is none."""
    if page.next is None:
        return ""
    given = {name: value for name, value in filters.items() if value is not None}
    return f"{path}?{urlencode({**given, 'limit': limit, 'cursor': page.next.encode()})}"


async def run_search(
    request: web.Request, query: SearchQuery, limit: int, cursor: Cursor | None
) -> SearchPage:
    """One page of ``query``'s matches (shared by ``GET /jobs`` and the search page)."""
    queues = request.app[QUEUES].all_keys()
    return await search(request.app[REDIS], queues, query, limit=limit, cursor=cursor)


async def search_jobs(request: web.Request) -> web.Response:
    filters = query_filters(request)
    query = search_query(filters, request.app[REGISTRY])
    limit, cursor = page_params(request)
    page = await run_search(request, query, limit, cursor)
    body = {
        "jobs": [describe(job) for job in page.jobs],
        "limit": limit,
        "examined": page.examined,
        "next": next_link("/jobs", filters, limit, page) or None,
    }
    return web.json_response(body)


async def bulk_jobs(request: web.Request) -> web.Response:
    form = await parse_json(request, BulkRequest)
    filters = {name: getattr(form, name) for name in FILTERS}
    query = search_query(filters, request.app[REGISTRY])
    settings = request.app[SETTINGS]
    try:
        outcome = await bulk_act(
            request.app[REDIS],
            settings,
            query,
            BulkAction(form.action),
            form.expected,
            request.app[QUEUES],
        )
    except CountChangedError as exc:
        body = {"error": f"{exc}: nothing was done; search again", "count": exc.count}
        return web.json_response(body, status=409)
    answer = {
        "action": outcome.action.value,
        "matched": form.expected,
        "more": outcome.more,
        "done": outcome.done,
        "skipped": [{"task_id": job, "reason": why} for job, why in outcome.skipped.items()],
    }
    return web.json_response(answer)
