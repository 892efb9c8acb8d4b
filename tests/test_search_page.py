"""The dashboard's search page over HTTP: the confirmation's count, a changed count, CSRF."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.queue.enqueue import enqueue
from service.records.search_index import SearchIndex
from settings import Settings
from tests.conftest import ClientFactory, queued
from tests.dashboard_client import Dashboard
from web import create_app


@pytest.fixture
async def dashboard(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> Dashboard:
    board = Dashboard(await aiohttp_client(create_app(settings)))
    response = await board.sign_in()
    assert response.status == 303, await response.text()
    return board


async def deferred_email(redis: ArqRedis, settings: Settings, to: str) -> str:
    return await enqueue(
        redis,
        "send_email",
        {"to": to, "subject": "Later", "body": "Hi"},
        run_at_ms=4_000_000_000_000,
        index=SearchIndex.from_settings(settings),
        search_keys=(to,),
    )


FILTERS = {"key": "ann@example.com", "state": "deferred"}


async def test_the_confirmation_states_the_count_and_a_changed_one_does_nothing(
    dashboard: Dashboard, redis: ArqRedis, settings: Settings
) -> None:
    first = await deferred_email(redis, settings, "ann@example.com")
    await deferred_email(redis, settings, "bob@example.com")
    page = await dashboard.page(
        "/dashboard/search/confirm?key=ann%40example.com&state=deferred&action=cancel"
    )
    assert "Cancel 1 job?" in page
    assert first in page

    second = await deferred_email(redis, settings, "ann@example.com")  # the set grows meanwhile
    response = await dashboard.post(
        "/dashboard/search/bulk", {**FILTERS, "action": "cancel", "expected": "1"}
    )
    assert response.status == 409
    assert "now matches 2 jobs, not 1: nothing was done" in await response.text()
    assert len(await queued(redis, settings)) == 3

    response = await dashboard.post(
        "/dashboard/search/bulk", {**FILTERS, "action": "cancel", "expected": "2"}
    )
    assert response.status == 303
    location = response.headers["Location"]
    assert "done=2" in location
    assert "skipped=0" in location
    remaining = await queued(redis, settings)
    assert first not in remaining
    assert second not in remaining
    assert len(remaining) == 1  # bob's
    shown = await dashboard.page(location)
    assert "Cancel: 2 jobs done." in shown


async def test_a_bulk_post_without_the_csrf_token_is_refused(
    dashboard: Dashboard, redis: ArqRedis, settings: Settings
) -> None:
    await deferred_email(redis, settings, "ann@example.com")
    response = await dashboard.post(
        "/dashboard/search/bulk", {**FILTERS, "action": "cancel", "expected": "1"}, csrf=False
    )
    assert response.status == 403
    assert len(await queued(redis, settings)) == 1


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({**FILTERS, "action": "explode", "expected": "1"}, 400),
        ({**FILTERS, "action": "cancel", "expected": "one"}, 400),
        ({"state": "lost", "action": "cancel", "expected": "1"}, 400),
    ],
)
async def test_a_bad_bulk_form_is_400_and_changes_nothing(
    dashboard: Dashboard, redis: ArqRedis, settings: Settings, form: dict[str, str], status: int
) -> None:
    await deferred_email(redis, settings, "ann@example.com")
    response = await dashboard.post("/dashboard/search/bulk", form)
    assert response.status == status, await response.text()
    assert len(await queued(redis, settings)) == 1


async def test_a_bad_filter_shows_the_page_with_the_reason(dashboard: Dashboard) -> None:
    page = await dashboard.page("/dashboard/search?since=yesterday", status=400)
    assert "since must be an RFC 3339 time" in page


async def test_the_search_page_escapes_what_it_echoes(dashboard: Dashboard) -> None:
    page = await dashboard.page("/dashboard/search?key=%3Cscript%3Ealert(1)%3C/script%3E")
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)" in page


async def test_the_api_needs_a_token(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    anonymous: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    assert (await anonymous.get("/jobs")).status == 401
    body = {"action": "retry", "expected": 0}
    assert (await anonymous.post("/jobs/bulk", json=body)).status == 401


async def test_the_page_goes_on_to_older_results(
    dashboard: Dashboard, redis: ArqRedis, settings: Settings
) -> None:
    made = [await deferred_email(redis, settings, "ann@example.com") for _ in range(23)]
    first = await dashboard.page("/dashboard/search?key=ann%40example.com&function=send_email")
    on_first = {job_id for job_id in made if job_id in first}
    assert len(on_first) == 20
    older = re.search(r'<a href="([^"]+)" id="older">', first)
    assert older is not None
    second = await dashboard.page(html.unescape(older.group(1)))
    # jobs queued within one millisecond are ordered by id: none is shown twice or skipped
    on_second = {job_id for job_id in made if job_id in second}
    assert len(on_second) == 3
    assert on_first | on_second == set(made)
    assert 'id="older"' not in second
