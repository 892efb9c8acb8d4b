"""The dashboard over HTTP: sign-in and sessions, CSRF, escaping, pages and actions.

Real app on a real port, real Redis, real worker; the browser tests (test_browser.py) drive
the same pages in Chromium.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from pytest_aiohttp import AiohttpServer
from yarl import URL

from jobs.registry import REGISTRY
from service.queue.enqueue import enqueue
from service.records import events
from service.store import keys
from settings import Settings
from tests import files
from tests.conftest import AUTH_HEADERS, ClientFactory, RunWorker, queued
from tests.dashboard_client import Dashboard
from tests.images import image_bytes
from tests.sse import next_event
from tests.waiting import wait_until
from tests.webhook_targets import hook_url
from web import create_app

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
async def anonymous(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def dashboard(anonymous: TestClient[Any, Any]) -> Dashboard:
    board = Dashboard(anonymous)
    response = await board.sign_in()
    assert response.status == 303, await response.text()
    return board


async def test_a_browser_without_a_session_is_sent_to_sign_in(
    anonymous: TestClient[Any, Any],
) -> None:
    response = await anonymous.get(
        "/dashboard/jobs/abc?x=1", headers={"Accept": "text/html"}, allow_redirects=False
    )
    assert response.status == 303
    assert response.headers["Location"] == "/dashboard/sign-in?next=/dashboard/jobs/abc?x%3D1"
    api = await anonymous.get("/dashboard")  # not a browser: the API's usual answer
    assert api.status == 401
    assert api.content_type == "application/json"


async def test_sign_in_sets_an_http_only_same_site_cookie(
    anonymous: TestClient[Any, Any], redis: ArqRedis
) -> None:
    board = Dashboard(anonymous)
    page = await board.page("/dashboard/sign-in?next=/dashboard/upload")
    assert 'value="/dashboard/upload"' in page
    response = await board.post(
        "/dashboard/sign-in",
        {"token": AUTH_HEADERS["Authorization"][7:], "next": "/dashboard/upload"},
        csrf=False,
    )
    assert response.status == 303
    assert response.headers["Location"] == "/dashboard/upload"
    cookie = response.cookies["jobsvc_session"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert int(cookie["max-age"]) == 12 * 3600
    # Redis holds the session under a hash of the cookie, never the cookie itself
    stored = [key.decode() async for key in redis.scan_iter(keys.session("*"))]
    assert len(stored) == 1
    assert cookie.value not in stored[0]
    assert "Overview" in await board.page("/dashboard")


@pytest.mark.parametrize(
    "next_path", ["https://evil.example/", "//evil.example/", "/task-status/x"]
)
async def test_sign_in_only_ever_returns_to_the_dashboard(
    anonymous: TestClient[Any, Any], next_path: str
) -> None:
    board = Dashboard(anonymous)
    response = await board.post(
        "/dashboard/sign-in",
        {"token": AUTH_HEADERS["Authorization"][7:], "next": next_path},
        csrf=False,
    )
    assert response.status == 303
    assert response.headers["Location"] == "/dashboard"


async def test_a_wrong_token_opens_no_session(
    anonymous: TestClient[Any, Any], redis: ArqRedis
) -> None:
    board = Dashboard(anonymous)
    response = await board.sign_in("wrong-token-0123456789abcdef")
    assert response.status == 403
    assert "not valid" in await response.text()
    assert "jobsvc_session" not in response.cookies
    assert [key async for key in redis.scan_iter(keys.session("*"))] == []


async def test_sign_in_from_another_site_is_refused(
    anonymous: TestClient[Any, Any], redis: ArqRedis
) -> None:
    response = await anonymous.post(
        "/dashboard/sign-in",
        data={"token": AUTH_HEADERS["Authorization"][7:]},
        headers={"Origin": "https://evil.example"},
        allow_redirects=False,
    )
    assert response.status == 403
    assert await redis.dbsize() == 0


async def test_the_session_cookie_opens_no_api_route(dashboard: Dashboard) -> None:
    response = await dashboard.client.post(
        "/events", json={"event": {}}, headers={"Origin": dashboard.origin}
    )
    assert response.status == 401


async def test_sign_out_ends_the_session_on_the_server(
    dashboard: Dashboard, redis: ArqRedis
) -> None:
    cookie = dashboard.client.session.cookie_jar.filter_cookies(dashboard.client.make_url("/"))
    value = cookie["jobsvc_session"].value
    response = await dashboard.post("/dashboard/sign-out")
    assert response.status == 303
    assert response.headers["Location"] == "/dashboard/sign-in"
    assert [key async for key in redis.scan_iter(keys.session("*"))] == []
    # even a kept copy of the old cookie no longer works
    replay = await dashboard.client.get(
        "/dashboard", headers={"Cookie": f"jobsvc_session={value}"}, allow_redirects=False
    )
    assert replay.status == 401


async def test_removing_a_token_ends_its_sessions(
    aiohttp_client: ClientFactory, settings: Settings, dashboard: Dashboard
) -> None:
    jar = dashboard.client.session.cookie_jar
    value = jar.filter_cookies(dashboard.client.make_url("/"))["jobsvc_session"].value
    rotated = settings.model_copy(update={"api_tokens": ("another-token-0123456789",)})
    other = await aiohttp_client(create_app(rotated))
    response = await other.get("/dashboard", headers={"Cookie": f"jobsvc_session={value}"})
    assert response.status == 401


@pytest.mark.parametrize(
    ("headers", "with_token", "reason"),
    [
        ({}, False, "CSRF"),
        ({"Origin": "https://evil.example"}, True, "cross-site"),
        ({"Origin": "null"}, True, "cross-site"),
    ],
    ids=["no-csrf-token", "other-origin", "null-origin"],
)
async def test_actions_need_the_csrf_token_and_this_origin(
    dashboard: Dashboard,
    redis: ArqRedis,
    settings: Settings,
    headers: dict[str, str],
    with_token: bool,
    reason: str,
) -> None:
    response = await dashboard.post(
        "/dashboard/crons/cron:daily_report/run", csrf=with_token, headers=headers
    )
    assert response.status == 403
    assert reason in (await response.json())["error"]
    assert await queued(redis, settings) == []


async def test_a_csrf_token_from_another_session_is_refused(
    dashboard: Dashboard, anonymous: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    other = Dashboard(anonymous)
    other.client = dashboard.client  # same browser, new sign-in: a new session and token
    old_csrf = dashboard.csrf
    await other.sign_in()
    assert other.csrf != old_csrf
    dashboard.csrf = old_csrf
    response = await dashboard.post("/dashboard/crons/cron:daily_report/run")
    assert response.status == 403
    assert await queued(redis, settings) == []


async def test_run_now_queues_the_cron_job_and_shows_it(
    dashboard: Dashboard, redis: ArqRedis, settings: Settings, run_worker: RunWorker
) -> None:
    response = await dashboard.post("/dashboard/crons/cron:cleanup_old_files/run")
    assert response.status == 303, await response.text()
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    assert await queued(redis, settings) == [job_id]
    page = await dashboard.page(response.headers["Location"])
    assert "cleanup_old_files" in page
    assert "PENDING" in page
    await run_worker()
    overview = await dashboard.page("/dashboard")
    assert f'href="/dashboard/jobs/{job_id}"' in overview  # the cron's last run links to it
    assert "badge-success" in overview
    unknown = await dashboard.post("/dashboard/crons/cron:nope/run")
    assert unknown.status == 404
    assert await queued(redis, settings) == []


async def test_overview_shows_queue_running_failures_retries_and_workers(
    dashboard: Dashboard, redis: ArqRedis, settings: Settings, run_worker: RunWorker
) -> None:
    ok = await enqueue(redis, "log_event", {"event": {"type": "ok"}})
    bad = await enqueue(redis, "process_image", {"upload": "missing.jpg"})
    await run_worker()
    later = await redis.enqueue_job(
        "send_email", to="a@example.com", subject="s", body="b", _defer_by=600
    )
    assert later is not None
    await enqueue(redis, "log_event", {"event": {"type": "waiting"}})

    page = await dashboard.page("/dashboard")
    assert f"/dashboard/jobs/{bad}" in page
    assert "upload &#39;missing.jpg&#39; not found" in page
    assert f"/dashboard/jobs/{ok}" in page
    assert f"/dashboard/jobs/{later.job_id}" in page
    assert "in 9 min" in page or "in 10 min" in page
    assert "daily_report" in page
    assert "cleanup_old_files" in page
    assert f"/ {settings.worker_max_jobs}</td>" in page  # the burst worker, until it closes
    # the waiting event; the deferred email is not due
    assert '<div class="value">1</div><div class="hint">due, not started · 1 deferred' in page


async def test_attacker_text_in_arguments_and_errors_is_escaped(
    dashboard: Dashboard, redis: ArqRedis, run_worker: RunWorker
) -> None:
    job_id = await enqueue(redis, "process_image", {"upload": XSS})
    await run_worker()
    for path in ["/dashboard", f"/dashboard/jobs/{job_id}"]:
        page = await dashboard.page(path)
        assert "<script>alert" not in page
        assert "<img src=x" not in page
        assert "&lt;script&gt;" in page
    response = await dashboard.client.get(f"/dashboard/jobs/{job_id}")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy


async def test_job_page_masks_secrets_in_arguments(dashboard: Dashboard, redis: ArqRedis) -> None:
    job_id = await enqueue(
        redis,
        "deliver_webhook",
        {
            "url": "https://user:hunter2@example.com/hook?token=abc123&x=1",
            "payload": {"password": "pa55word", "api_key": "k-123", "order": 42},
        },
    )
    page = await dashboard.page(f"/dashboard/jobs/{job_id}")
    for secret in ["hunter2", "abc123", "pa55word", "k-123"]:
        assert secret not in page
    assert "example.com/hook" in page
    assert "42" in page


async def test_unknown_job_page_is_404_html(dashboard: Dashboard) -> None:
    page = await dashboard.page("/dashboard/jobs/" + "0" * 32, status=404)
    assert "No such job" in page


async def test_dashboard_upload_queues_and_the_thumbnail_is_served(
    dashboard: Dashboard, run_worker: RunWorker, settings: Settings
) -> None:
    form = aiohttp.FormData()
    form.add_field("file", image_bytes((1200, 900)), filename="a.jpg", content_type="image/jpeg")
    response = await dashboard.client.post(
        "/dashboard/upload",
        data=form,
        headers={"Origin": dashboard.origin, "X-CSRF-Token": dashboard.csrf},
    )
    assert response.status == 202, await response.text()
    task_id = (await response.json())["task_id"]
    await run_worker()
    status = await (
        await dashboard.client.get(f"/task-status/{task_id}", headers=AUTH_HEADERS)
    ).json()
    name = status["result"]["thumbnail"]
    image = await dashboard.client.get(f"/dashboard/thumbnails/{name}")
    assert image.status == 200
    assert image.content_type == "image/jpeg"
    assert await image.read() == await files.read_bytes(settings.uploads_dir / name)
    assert image.headers["X-Content-Type-Options"] == "nosniff"


async def test_dashboard_upload_without_csrf_stores_nothing(
    dashboard: Dashboard, settings: Settings, redis: ArqRedis
) -> None:
    form = aiohttp.FormData()
    form.add_field("file", image_bytes((60, 40)), filename="a.jpg", content_type="image/jpeg")
    response = await dashboard.client.post(
        "/dashboard/upload", data=form, headers={"Origin": dashboard.origin}
    )
    assert response.status == 403
    assert await files.names_in(settings.uploads_dir) == []
    assert await queued(redis, settings) == []


@pytest.mark.parametrize(
    "name",
    [
        "..%2F..%2Fapp.db",
        "%2e%2e%2fapp.db",
        "app.db",
        "0123456789abcdef0123456789abcdef.jpg",  # an upload, not a thumbnail
        "0123456789abcdef0123456789abcdef_thumb.jpg%00.png",
        "..",
        ".hidden_thumb.jpg",
        "link_thumb.jpg",  # a symlink to a file outside the folder
        "..%2Fsecret_thumb.jpg",
    ],
)
async def test_thumbnail_route_serves_thumbnails_only(
    dashboard: Dashboard, settings: Settings, name: str
) -> None:
    uploads = settings.uploads_dir
    await files.write_bytes(uploads / "0123456789abcdef0123456789abcdef.jpg", b"original")
    await files.write_bytes(uploads / ".hidden_thumb.jpg", b"hidden")
    await files.write_bytes(settings.data_dir / "secret_thumb.jpg", b"secret")
    link = uploads / "link_thumb.jpg"
    await asyncio.to_thread(link.symlink_to, settings.data_dir / "secret_thumb.jpg")
    response = await dashboard.client.get(f"/dashboard/thumbnails/{name}")
    assert response.status == 404
    assert response.content_type == "application/json"


async def test_thumbnail_route_needs_a_session(
    anonymous: TestClient[Any, Any], settings: Settings
) -> None:
    name = "0123456789abcdef0123456789abcdef_thumb.jpg"
    await files.write_bytes(settings.uploads_dir / name, image_bytes((10, 10)))
    assert (await anonymous.get(f"/dashboard/thumbnails/{name}")).status == 401


async def test_live_events_open_with_the_session_cookie(
    dashboard: Dashboard, redis: ArqRedis
) -> None:
    job_id = await enqueue(redis, "log_event", {"event": {}})
    response = await dashboard.client.get(f"/jobs/{job_id}/events")
    assert response.status == 200
    assert b"PENDING" in await response.content.readuntil(b"\n\n")
    response.close()


async def test_mail_page_lists_captured_mail_in_development(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    dev = settings.model_copy(update={"dashboard_mail_page": True})
    await files.write_bytes(
        dev.mail_dir / "20261124T010203-abcd.eml",
        b"From: jobs@example.com\r\nTo: ann@example.com\r\nSubject: Welcome <b>Ann</b>\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello Ann, <script>x</script>\r\n",
    )
    board = Dashboard(await aiohttp_client(create_app(dev)))
    await board.sign_in()
    page = await board.page("/dashboard/mail")
    assert "ann@example.com" in page
    assert "Welcome &lt;b&gt;Ann&lt;/b&gt;" in page
    assert "Hello Ann, &lt;script&gt;" in page
    assert 'href="/dashboard/mail"' in page


async def test_mail_page_is_off_outside_development(dashboard: Dashboard) -> None:
    assert (await dashboard.client.get("/dashboard/mail")).status == 404
    assert 'href="/dashboard/mail"' not in await dashboard.page("/dashboard")


async def test_static_files_are_public(anonymous: TestClient[Any, Any]) -> None:
    for name in ["dashboard.css", "dashboard.js", "graphs.js", "vendor/uplot/uPlot.iife.min.js"]:
        response = await anonymous.get(f"/dashboard/static/{name}")
        assert response.status == 200
    licence = await anonymous.get("/dashboard/static/vendor/uplot/LICENSE")  # served beside it
    assert licence.status == 200
    assert "The MIT License" in await licence.text()
    for path in ["/dashboard/static/../templates/base.html", "/dashboard/static/%2e%2e/app.py"]:
        response = await anonymous.get(URL(path, encoded=True))
        assert response.status in {401, 403, 404}
        assert "{% block" not in await response.text()


async def test_each_worker_is_listed_with_running_and_max_jobs(
    dashboard: Dashboard, redis: ArqRedis, settings: Settings
) -> None:
    from service.engine.loop import BatchWorker as Worker
    from service.worker.options import worker_options

    options = worker_options(settings)
    options.update(poll_delay=0.01, handle_signals=False)
    worker = Worker(**options)
    task = asyncio.create_task(worker.main())
    try:

        async def listed() -> bool:  # once its first health line is written
            return "No worker is alive" not in await dashboard.page("/dashboard")

        await wait_until(listed)
        assert f"0 / {settings.worker_max_jobs}" in await dashboard.page("/dashboard")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.close()


def test_templates_and_static_files_ship_with_the_package() -> None:
    root = Path(__file__).parents[1] / "web"
    assert (root / "templates" / "overview.html").is_file()
    assert (root / "static" / "dashboard.js").is_file()


async def test_retry_requeues_a_failed_job_under_its_id(
    dashboard: Dashboard, redis: ArqRedis, settings: Settings, run_worker: RunWorker
) -> None:
    job_id = await enqueue(redis, "process_image", {"upload": "later.jpg"})
    await run_worker()
    overview = await dashboard.page("/dashboard")
    assert f"/dashboard/jobs/{job_id}/retry" in overview
    assert "upload &#39;later.jpg&#39; not found" in overview

    await files.write_bytes(settings.uploads_dir / "later.jpg", image_bytes((400, 300)))
    response = await dashboard.post(f"/dashboard/jobs/{job_id}/retry")
    assert response.status == 303, await response.text()
    assert response.headers["Location"] == f"/dashboard/jobs/{job_id}"
    assert await queued(redis, settings) == [job_id]
    again = await dashboard.post(f"/dashboard/jobs/{job_id}/retry")
    assert again.status == 409, "a job can be re-queued once per failure"
    await run_worker()
    page = await dashboard.page(f"/dashboard/jobs/{job_id}")
    assert "badge-success" in page
    assert "later_thumb.jpg" in page
    assert f"/dashboard/jobs/{job_id}/retry" not in await dashboard.page("/dashboard")


async def test_delete_drops_a_failure_from_the_list(
    dashboard: Dashboard, redis: ArqRedis, settings: Settings, run_worker: RunWorker
) -> None:
    job_id = await enqueue(redis, "process_image", {"upload": "gone.jpg"})
    await run_worker()
    response = await dashboard.post(f"/dashboard/jobs/{job_id}/delete")
    assert response.status == 303
    assert response.headers["Location"] == "/dashboard"
    assert f"/dashboard/jobs/{job_id}/retry" not in await dashboard.page("/dashboard")
    assert (await dashboard.post(f"/dashboard/jobs/{job_id}/retry")).status == 409
    assert await queued(redis, settings) == []


async def test_cancel_stops_a_queued_job(
    dashboard: Dashboard, redis: ArqRedis, settings: Settings
) -> None:
    job_id = await enqueue(redis, "log_event", {"event": {"n": 1}})
    page = await dashboard.page(f"/dashboard/jobs/{job_id}")
    assert f"/dashboard/jobs/{job_id}/cancel" in page
    response = await dashboard.post(f"/dashboard/jobs/{job_id}/cancel")
    assert response.status == 303
    assert await queued(redis, settings) == []
    assert "CANCELLED" in await dashboard.page(f"/dashboard/jobs/{job_id}")
    assert (await dashboard.post(f"/dashboard/jobs/{job_id}/cancel")).status == 409


async def test_overview_lists_a_running_job_with_its_attempt(
    dashboard: Dashboard, redis: ArqRedis, run_worker: RunWorker, aiohttp_server: AiohttpServer
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.json_response({"ok": True})

    url = await hook_url(aiohttp_server, held)
    job_id = await enqueue(redis, "deliver_webhook", {"url": url, "payload": {"n": 1}})
    worker = asyncio.create_task(run_worker())
    try:
        await asyncio.wait_for(arrived.wait(), 10)
        page = await dashboard.page("/dashboard")
        running = page.split('id="running"')[1].split("</section>")[0]
        assert f"/dashboard/jobs/{job_id}" in running
        assert "deliver_webhook" in running
        assert "payload={&#39;n&#39;: 1}" in running
        job_page = await dashboard.page(f"/dashboard/jobs/{job_id}")
        assert "badge-started" in job_page
        assert f"/dashboard/jobs/{job_id}/cancel" in job_page
    finally:
        release.set()
        await worker
    after = await dashboard.page("/dashboard")
    assert "Nothing is running." in after


async def test_overview_stream_says_changed_when_a_job_changes_state(
    dashboard: Dashboard, redis: ArqRedis, run_worker: RunWorker
) -> None:
    stream = await dashboard.client.get("/dashboard/events")
    assert stream.status == 200
    assert stream.content_type == "text/event-stream"
    assert await stream.content.readuntil(b"\n\n") == b": watching\n\n"
    await enqueue(redis, "log_event", {"event": {"n": 1}})
    await run_worker()
    event = await asyncio.wait_for(next_event(stream), 5)
    assert event is not None
    assert event.kind == "changed"
    stream.close()


async def test_overview_stream_redraws_again_for_what_changed_during_its_pause(
    dashboard: Dashboard, redis: ArqRedis
) -> None:
    """A redraw is followed by a pause (OVERVIEW_PAUSE); what is published meanwhile (here a
    worker's new graph counts) was once dropped, leaving the page behind until a later change."""
    stream = await dashboard.client.get("/dashboard/events")
    assert await stream.content.readuntil(b"\n\n") == b": watching\n\n"
    await redis.publish(
        keys.job_events("0" * 32, keys.database_of(redis)),
        events.encode("status", {"status": "STARTED"}),
    )
    first = await asyncio.wait_for(next_event(stream), 5)
    assert first is not None
    assert first.kind == "changed"
    graphs = keys.job_events("graphs", keys.database_of(redis))
    await redis.publish(graphs, events.encode("graphs", {}))  # within the pause
    second = await asyncio.wait_for(next_event(stream), 2.5)  # one pause later, not 3 s more
    assert second is not None
    assert second.kind == "changed"
    stream.close()


async def test_overview_stream_needs_a_session(anonymous: TestClient[Any, Any]) -> None:
    response = await anonymous.get("/dashboard/events")
    assert response.status == 401


async def test_signing_in_again_replaces_the_session(dashboard: Dashboard, redis: ArqRedis) -> None:
    assert len([key async for key in redis.scan_iter(keys.session("*"))]) == 1
    await dashboard.sign_in()
    assert len([key async for key in redis.scan_iter(keys.session("*"))]) == 1


async def test_sign_in_attempts_are_limited_per_client(
    anonymous: TestClient[Any, Any], redis: ArqRedis
) -> None:
    board = Dashboard(anonymous)
    for _ in range(10):
        assert (await board.sign_in("wrong-token-0123456789abcdef")).status == 403
    refused = await board.sign_in()  # even the right token waits now
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert [key async for key in redis.scan_iter(keys.session("*"))] == []


async def test_a_sign_in_without_a_body_is_an_empty_form_and_a_chunked_one_is_refused(
    anonymous: TestClient[Any, Any], redis: ArqRedis
) -> None:
    """No Content-Length and no Transfer-Encoding means no body (RFC 9112, 6.3): a wrong
    token, not a missing length. A chunked form could be any size, so it is refused unread."""
    host, port = anonymous.server.host, anonymous.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            b"POST /dashboard/sign-in HTTP/1.1\r\nHost: %s:%d\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\n"
            % (host.encode(), port)
        )
        status_line = await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()
    assert status_line.split()[1] == b"403", status_line

    async def chunks() -> Any:
        yield b"token=" + AUTH_HEADERS["Authorization"][7:].encode()

    chunked = await anonymous.post(
        "/dashboard/sign-in",
        data=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        allow_redirects=False,
    )
    assert chunked.status == 411
    assert "Content-Length" in (await chunked.json())["error"]
    assert [key async for key in redis.scan_iter(keys.session("*"))] == []


async def test_sign_in_never_echoes_control_characters_into_location(
    anonymous: TestClient[Any, Any],
) -> None:
    board = Dashboard(anonymous)
    response = await board.post(
        "/dashboard/sign-in",
        {"token": AUTH_HEADERS["Authorization"][7:], "next": "/dashboard\r\nSet-Cookie: x=1"},
        csrf=False,
    )
    assert response.status == 303
    assert response.headers["Location"] == "/dashboard"


async def test_overview_lists_every_declared_job_with_its_limits(
    dashboard: Dashboard, settings: Settings
) -> None:
    page = await dashboard.page("/dashboard")
    jobs = page.split('id="jobs"', 1)[1]
    for name in REGISTRY:
        assert f"<strong>{name.name}</strong>" in jobs
    send_email = jobs.split("<strong>send_email</strong>", 1)[1].split("</tr>", 1)[0]
    assert "Send one email to one recipient" in send_email
    assert f'<td class="time">{settings.job_max_tries}</td>' in send_email
    assert "POST /jobs" in send_email
    welcome = jobs.split("<strong>send_welcome_email</strong>", 1)[1].split("</tr>", 1)[0]
    assert "its own route" in welcome
    events = jobs.split("<strong>log_event</strong>", 1)[1].split("</tr>", 1)[0]
    assert "keeps no result" in events
    cleanup = jobs.split("<strong>cleanup_old_files</strong>", 1)[1].split("</tr>", 1)[0]
    assert '<td class="small">cron</td>' in cleanup
    report = jobs.split("<strong>daily_report</strong>", 1)[1].split("</tr>", 1)[0]
    assert '<td class="small">POST /jobs, cron</td>' in report


async def test_overview_stream_hears_only_its_own_database(
    dashboard: Dashboard, redis: ArqRedis
) -> None:
    """Pub/sub is server-wide: a service in another database of the same Redis server once
    woke this overview with its own jobs' events (and its graph ticks)."""
    stream = await dashboard.client.get("/dashboard/events")
    assert await stream.content.readuntil(b"\n\n") == b": watching\n\n"
    other_database = keys.database_of(redis) + 1
    for job in ("0" * 32, "graphs"):
        channel = keys.job_events(job, other_database)
        await redis.publish(channel, events.encode("status", {"status": "STARTED"}))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(next_event(stream), 1.5)
    await redis.publish(
        keys.job_events("0" * 32, keys.database_of(redis)),
        events.encode("status", {"status": "STARTED"}),
    )
    own = await asyncio.wait_for(next_event(stream), 5)
    assert own is not None
    assert own.kind == "changed"
    stream.close()
