"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright.

The web app listens on a real loopback port and a real arq worker runs beside it, both in the
test's event loop; the browser talks to them like a person's would. Screenshots of the pages
are saved under ``var/screenshots`` (or ``$SCREENSHOT_DIR``) and named in the output.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from arq.connections import ArqRedis
from playwright.async_api import Browser, FilePayload, Page, async_playwright, expect
from pytest_aiohttp import AiohttpServer

from service.engine.loop import BatchWorker as Worker
from service.queue.enqueue import enqueue
from service.queue.pause import pause, resume
from service.records import failed_jobs
from service.records.search import JobState, job_states
from service.records.search_index import SearchIndex
from settings import Settings
from tests import files
from tests.conftest import TEST_API_TOKEN, SmtpRecorder, background_worker
from tests.images import image_bytes
from tests.waiting import wait_until
from web import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(
    os.environ.get("SCREENSHOT_DIR", Path(__file__).parents[1] / "var" / "screenshots")
)
LIVE_TIMEOUT_MS = 15_000  # a shared 2-core machine can be slow; a pass takes well under 1 s
expect.set_options(timeout=LIVE_TIMEOUT_MS)

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
    pytest.skip(
        f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)",
        allow_module_level=True,
    )


@pytest.fixture
async def server(aiohttp_server: AiohttpServer, settings: Settings, redis: ArqRedis) -> TestServer:
    """The web app on a real port of 127.0.0.1."""
    live = settings.model_copy(update={"dashboard_mail_page": True})
    return await aiohttp_server(create_app(live), host="127.0.0.1")


@pytest.fixture
async def worker(settings: Settings, redis: ArqRedis) -> AsyncIterator[Worker]:
    """A real arq worker polling the queue for the whole test, as in production."""
    async with background_worker(settings, poll_delay=0.05) as running:
        yield running


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Browser, server: TestServer) -> AsyncIterator[Page]:
    context = await browser.new_context(
        base_url=str(server.make_url("/")).rstrip("/"), viewport={"width": 1360, "height": 900}
    )
    context.set_default_timeout(LIVE_TIMEOUT_MS)
    tab = await context.new_page()
    tab.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    yield tab
    await context.close()


async def screenshot(page: Page, name: str) -> Path:
    await asyncio.to_thread(SCREENSHOTS.mkdir, parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


async def sign_in(page: Page) -> None:
    await page.goto("/dashboard")
    await expect(page).to_have_url("/dashboard/sign-in?next=/dashboard")
    await page.fill("#token", TEST_API_TOKEN)
    await page.click("button:has-text('Sign in')")
    await expect(page.locator("h1")).to_have_text("Overview")


async def test_sign_in_rejects_a_wrong_token_then_accepts_the_right_one(page: Page) -> None:
    await page.goto("/dashboard/sign-in")
    await screenshot(page, "sign-in")
    await page.fill("#token", "not-the-token-0123456789")
    await page.click("button:has-text('Sign in')")
    await expect(page.locator(".error-text")).to_have_text("That token is not valid.")
    await sign_in(page)
    cookies = await page.context.cookies()
    session = next(cookie for cookie in cookies if cookie["name"] == "jobsvc_session")
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert await page.evaluate("document.cookie") == "", "scripts cannot read the session"
    await page.click("button:has-text('Sign out')")
    await expect(page).to_have_url("/dashboard/sign-in")
    await page.goto("/dashboard")
    await expect(page).to_have_url("/dashboard/sign-in?next=/dashboard")


async def test_upload_shows_the_job_succeed_and_the_thumbnail_without_reloading(
    page: Page, worker: Worker
) -> None:
    await sign_in(page)
    await page.click("nav >> text=Upload")
    await expect(page.locator("h1")).to_have_text("Upload an image")
    await page.evaluate("window.sameDocument = true")  # gone if the page reloads
    # the file's bytes go to the browser as they are: nothing to read from disk
    photo: FilePayload = {
        "name": "holiday.jpg",
        "mimeType": "image/jpeg",
        "buffer": image_bytes((1600, 1200)),
    }
    await page.set_input_files("#upload-file", photo)
    await page.click("button:has-text('Upload')")

    panel = page.locator("#upload-job")
    await expect(panel.locator("[data-field=status]")).to_have_text("SUCCESS")
    thumbnail = panel.locator("img.thumb")
    await expect(thumbnail).to_be_visible()
    await page.wait_for_function(
        "document.querySelector('#upload-job img.thumb').naturalWidth === 800"
    )
    assert await page.evaluate("window.sameDocument") is True, "the page was reloaded"
    bar = panel.locator("[data-field=bar]")
    assert await bar.evaluate("element => element.style.width") == "100%"
    await expect(panel.locator("[data-field=progress]")).to_have_text("")
    await screenshot(page, "upload")

    await panel.locator("text=Job page").click()
    await expect(page.locator(".status-line [data-field=status]")).to_have_text("SUCCESS")
    await expect(page.locator("table >> text=SUCCESS")).to_be_visible()
    await page.wait_for_function("document.querySelector('img.thumb').naturalWidth === 800")
    await screenshot(page, "job")


async def test_a_failed_job_is_retried_from_the_overview(
    page: Page, worker: Worker, redis: ArqRedis, settings: Settings
) -> None:
    job_id = await enqueue(redis, "process_image", {"upload": "arrives-late.jpg"})
    await sign_in(page)
    await expect(page.locator(".live-dot.on")).to_be_visible()
    await page.evaluate("window.sameDocument = true")
    failures = page.locator("#failures")
    row = failures.locator("tr", has=page.locator(f"a[href='/dashboard/jobs/{job_id}']"))
    await expect(row.locator(".reason")).to_contain_text("not found")  # the page redraws itself
    assert await page.evaluate("window.sameDocument") is True, "the page was reloaded"
    await screenshot(page, "overview")

    await files.write_bytes(settings.uploads_dir / "arrives-late.jpg", image_bytes((900, 600)))
    await row.locator("button:has-text('Retry')").click()
    await expect(page).to_have_url(f"/dashboard/jobs/{job_id}")
    await expect(page.locator(".status-line [data-field=status]")).to_have_text("SUCCESS")
    await expect(page.locator("img.thumb")).to_be_visible()  # after the page's own reload
    await page.wait_for_function("document.querySelector('img.thumb').naturalWidth === 800")
    attempts = page.locator("section:has(h2:text('Attempts')) tbody tr")
    await expect(attempts).to_have_count(2)
    await expect(attempts.nth(0)).to_contain_text("FAILURE")
    await expect(attempts.nth(1)).to_contain_text("SUCCESS")
    await screenshot(page, "job-retried")
    await page.click("nav >> text=Overview")
    await expect(row).to_have_count(0)


async def test_run_now_on_a_cron_runs_it_and_the_overview_shows_the_run(
    page: Page, worker: Worker
) -> None:
    await sign_in(page)
    crons = page.locator("#crons")
    report = crons.locator("tr", has=page.locator("text=daily_report"))
    await expect(report).to_contain_text("never")
    await report.locator("button:has-text('Run now')").click()
    await expect(page).to_have_url(re.compile(r"/dashboard/jobs/[0-9a-f]{32}$"))
    await expect(page.locator(".status-line [data-field=status]")).to_have_text("SUCCESS")
    await expect(page.locator("pre.code").last).to_contain_text("reports/")
    await page.click("nav >> text=Overview")
    await expect(report.locator(".badge")).to_have_text("SUCCESS")
    await expect(page.locator("#workers tbody tr")).to_have_count(1)
    await expect(page.locator("#successes")).to_contain_text("daily_report")
    await screenshot(page, "overview-after-run")


async def test_mail_page_shows_what_the_sink_captured(page: Page, settings: Settings) -> None:
    await files.write_bytes(
        settings.mail_dir / "20261124T010203-abcd1234.eml",
        b"From: Job Service <jobs@example.com>\r\nTo: ann@example.com\r\n"
        b"Subject: Welcome Ann Lee!\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Hi Ann, thanks for signing up.\r\n",
    )
    await sign_in(page)
    await page.click("nav >> text=Mail")
    mail = page.locator("details.mail")
    await expect(mail).to_have_count(1)
    await mail.locator("summary").click()
    await expect(mail.locator("pre")).to_contain_text("thanks for signing up")
    await screenshot(page, "mail")


# Counts the canvas pixels of one series' colour and the rows they span: a line drawn along
# zero spans a row or two, a line drawn through counts above zero rises over many.
SERIES_PIXELS = """([figure, rgb]) => {
  const canvas = document.querySelector(`#${figure} canvas`);
  const context = canvas.getContext("2d");
  const { data, width, height } = context.getImageData(0, 0, canvas.width, canvas.height);
  const rows = new Set();
  let pixels = 0;
  for (let i = 0; i < data.length; i += 4) {
    const near = Math.abs(data[i] - rgb[0]) + Math.abs(data[i + 1] - rgb[1])
      + Math.abs(data[i + 2] - rgb[2]) < 60 && data[i + 3] > 200;
    if (near) { pixels += 1; rows.add(Math.floor(i / 4 / width)); }
  }
  return { pixels, rows: rows.size, height };
}"""
COMPLETED_RGB, FAILED_RGB = (0x15, 0x80, 0x3D), (0xB9, 0x1C, 0x1C)


async def test_the_overview_draws_the_jobs_it_sees_finish_in_its_throughput_graphs(
    page: Page, worker: Worker, redis: ArqRedis
) -> None:
    await sign_in(page)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))  # uncaught script errors
    await page.evaluate(  # and what the Content-Security-Policy refused, as the page redraws
        "window.refused = []; document.addEventListener('securitypolicyviolation',"
        " (event) => window.refused.push(event.violatedDirective + ' ' + event.blockedURI))"
    )
    await expect(page.locator(".live-dot.on")).to_be_visible()
    await expect(page.locator("#graph-5m canvas")).to_have_count(1)
    await expect(page.locator("#graph-5m")).to_have_attribute("data-completed-points", "0")
    await page.evaluate("window.sameDocument = true")

    for n in range(12):
        await enqueue(redis, "log_event", {"event": f"event {n}"})
    await enqueue(redis, "process_image", {"upload": "missing.jpg"})  # fails for good

    # the page redraws itself as the jobs finish (the overview's live stream), graphs included
    for span in ("5m", "24h", "30d"):
        figure = page.locator(f"#graph-{span}")
        await expect(figure.locator(".totals")).to_have_text("12 completed · 1 failed")
        await expect(figure).to_have_attribute("data-drawn", "true")
        await expect(figure.locator("canvas")).to_have_count(1)
        assert int(await figure.get_attribute("data-completed-points") or 0) >= 1, span
        assert int(await figure.get_attribute("data-failed-points") or 0) == 1, span
        # the tallest series rises to near the top of the plot (the canvas holds the axes too);
        # the failed one's single job a little (a line along zero spans 2 or 3 rows)
        completed = await page.evaluate(SERIES_PIXELS, [f"graph-{span}", list(COMPLETED_RGB)])
        assert completed["rows"] > completed["height"] // 4, (span, completed)
        failed = await page.evaluate(SERIES_PIXELS, [f"graph-{span}", list(FAILED_RGB)])
        assert failed["rows"] >= 5, (span, failed)
    assert await page.evaluate("window.sameDocument") is True, "the page was reloaded"

    functions = page.locator("#functions")
    events = functions.locator("tr", has=page.locator("text=log_event"))
    await expect(events.locator("td").nth(1)).to_have_text("12")
    await expect(events.locator("td").nth(2)).to_have_text("0.0%")
    images = functions.locator("tr", has=page.locator("text=process_image"))
    await expect(images.locator("td").nth(2)).to_have_text("100.0%")
    assert errors == [], errors
    assert await page.evaluate("window.refused") == []
    await screenshot(page, "overview-throughput")

    # with nothing finishing, the live graph still moves on, by the browser's clock alone (a
    # figure a redraw brings starts with no steps added: a redraw cannot pass for this)
    await expect(page.locator("#graph-5m")).to_have_attribute("data-advanced", re.compile(r"\d"))
    assert await page.evaluate("window.sameDocument") is True


async def test_a_webhooks_job_page_shows_its_delivery_ledger(
    page: Page, worker: Worker, redis: ArqRedis, aiohttp_server: AiohttpServer
) -> None:
    answers = [(503, '{"error": "busy", "token": "receiver-secret-1"}'), (200, "<b>thanks</b>")]

    async def receive(request: web.Request) -> web.Response:
        status, body = answers.pop(0)
        return web.Response(status=status, text=body, headers={"Retry-After": "0"})

    app = web.Application()
    app.router.add_post("/hook", receive)
    target = await aiohttp_server(app, host="127.0.0.1")
    job_id = await enqueue(
        redis, "deliver_webhook", {"url": str(target.make_url("/hook")), "payload": {"n": 1}}
    )
    await sign_in(page)
    await page.goto(f"/dashboard/jobs/{job_id}")
    await expect(page.locator(".status-line [data-field=status]")).to_have_text("SUCCESS")
    await page.reload()  # the ledger is drawn by the server, as the attempts table is
    ledger = page.locator("#ledger tbody tr")
    await expect(ledger).to_have_count(2)
    await expect(ledger.nth(0).locator("[data-field=answer]")).to_have_text("503")
    await expect(ledger.nth(0)).to_contain_text("retry-after: 0")
    await expect(ledger.nth(0).locator("[data-field=body]")).to_contain_text('"error": "busy"')
    await expect(ledger.nth(1).locator("[data-field=answer]")).to_have_text("200")
    # the receiver's text is shown as text, never as markup
    await expect(ledger.nth(1).locator("[data-field=body]")).to_have_text("<b>thanks</b>")
    assert "receiver-secret-1" not in await page.content()
    await screenshot(page, "job-webhook-ledger")

    answers.append((200, "again"))
    await page.click("button:has-text('Replay')")  # the confirm dialog is accepted
    await expect(page).to_have_url(re.compile(r"/dashboard/jobs/[0-9a-f]{32}$"))
    assert job_id not in page.url
    await expect(page.locator("[data-field=replay-of]")).to_have_text(job_id)
    await expect(page.locator(".status-line [data-field=status]")).to_have_text("SUCCESS")
    await page.click("[data-field=replay-of]")
    await expect(page.locator("[data-field=replays] a")).to_have_count(1)


async def test_pause_shows_a_banner_that_resume_lifts_and_another_operators_pause_shows_live(
    page: Page, worker: Worker, redis: ArqRedis, settings: Settings
) -> None:
    await sign_in(page)
    banner = page.locator("#paused-banner")
    await expect(banner).to_have_count(0)
    await page.click("button:has-text('Pause queue')")  # the confirmation is accepted
    await expect(banner).to_contain_text("Queue paused")
    await expect(banner).to_contain_text("Nothing is running: safe to stop the workers.")
    job_id = await enqueue(redis, "log_event", {"event": {"n": 1}})
    await page.reload()
    await expect(page.locator("#stat-queued .value")).to_have_text("1")  # waits, not taken
    await screenshot(page, "overview-paused")

    await banner.locator("button:has-text('Resume')").click()
    await expect(banner).to_have_count(0)
    await expect(page.locator("#successes")).to_contain_text(job_id[:8])

    # a pause made elsewhere (the API, another operator) reaches this open page by itself
    await expect(page.locator(".live-dot.on")).to_be_visible()
    await page.evaluate("window.sameDocument = true")
    await pause(redis, settings.queue_name)
    await expect(banner).to_be_visible()
    assert await page.evaluate("window.sameDocument") is True, "the page was reloaded"
    await resume(redis, settings.queue_name)
    await expect(banner).to_have_count(0)


async def test_a_paused_cron_schedule_shows_as_paused_with_its_next_and_last_runs(
    page: Page, worker: Worker
) -> None:
    await sign_in(page)
    report = page.locator("#cron-daily_report")
    await expect(report.locator(".badge")).to_have_count(0)
    await report.locator("button:has-text('Pause')").click()  # the confirmation is accepted
    await expect(report.locator(".badge-paused")).to_have_text("PAUSED")
    await expect(report).to_contain_text("skipped while paused")
    more = page.locator("#cron-daily_report + tr.cron-more")
    await more.locator("summary").click()
    await expect(more.locator("ol.next-runs li")).to_have_count(5)
    await expect(more).to_contain_text("No scheduled run yet.")
    await screenshot(page, "overview-cron-paused")

    await report.locator("button:has-text('Resume')").click()
    await expect(report.locator(".badge-paused")).to_have_count(0)
    await expect(report.locator("button:has-text('Pause')")).to_be_visible()


async def test_a_search_by_recipient_finds_its_jobs_and_a_confirmed_bulk_retry_reruns_them(
    page: Page, worker: Worker, redis: ArqRedis, settings: Settings, smtp_server: SmtpRecorder
) -> None:
    smtp_server.replies = ["550 5.1.1 mailbox unavailable"] * 2
    index = SearchIndex.from_settings(settings)
    mails = [
        await enqueue(
            redis,
            "send_email",
            {"to": "ann@example.com", "subject": f"Receipt {n}", "body": "Thanks!"},
            index=index,
            search_keys=("ann@example.com",),
        )
        for n in range(2)
    ]

    async def both_failed() -> bool:
        listed = await failed_jobs.page(redis, offset=0, limit=10, max_age=3600, max_jobs=10)
        return listed.total == 2

    await wait_until(both_failed, within=LIVE_TIMEOUT_MS / 1000)
    await sign_in(page)
    await page.click("nav >> text=Search")
    await expect(page.locator("h1")).to_have_text("Search")
    await page.fill("#search-key", "Ann@Example.com")
    await page.select_option("#search-state", "failed")
    await page.click("#search-form button:has-text('Search')")
    rows = page.locator("#results tbody tr")
    await expect(rows).to_have_count(2)
    for job_id in mails:
        row = rows.filter(has=page.locator(f"a[href='/dashboard/jobs/{job_id}']"))
        await expect(row.locator(".badge")).to_have_text("failed")
    await screenshot(page, "search")

    await page.click("button:has-text('Retry all…')")
    await expect(page.locator("h1")).to_have_text("Retry 2 jobs?")
    await expect(page.locator("#confirm-count")).to_have_text("2")
    await expect(page.locator("#confirm tbody tr")).to_have_count(2)
    await screenshot(page, "search-confirm")
    await page.click("#confirm-button")
    await expect(page.locator("#bulk-notice")).to_have_text("Retry: 2 jobs done.")
    await screenshot(page, "search-retried")

    async def both_sent() -> bool:
        states = await job_states(redis, settings.queue_name, mails)
        return states == [JobState.SUCCEEDED] * 2

    await wait_until(both_sent, within=LIVE_TIMEOUT_MS / 1000)
    await page.select_option("#search-state", "succeeded")
    await page.click("#search-form button:has-text('Search')")
    await expect(rows.locator(".badge-succeeded")).to_have_count(2)
    await screenshot(page, "search-succeeded")
    assert len(smtp_server.messages) == 2  # each retried once, both sent
