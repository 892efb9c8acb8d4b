"""The daily report's mail: one message to each of REPORT_RECIPIENTS, once per report."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from jobs.report_mail import mailed_key
from settings import Settings, SettingsError, load_settings
from tests import files
from tests.conftest import (
    AUTH_HEADERS,
    ClientFactory,
    RunWorker,
    SmtpRecorder,
    accepted_task,
    assert_refused,
    status_of,
)
from tests.dashboard_client import Dashboard
from tests.test_ratelimit import email_to
from web import create_app

TWO = ("ops@example.com", "boss@example.org")
THREE = ("ops@example.com", "boss@example.org", "audit@example.net")


def yesterday(settings: Settings) -> date:
    return datetime.now(settings.timezone).date() - timedelta(days=1)


def mailing(settings: Settings, recipients: tuple[str, ...], **more: Any) -> Settings:
    return settings.model_copy(update={"report_recipients": recipients, **more})


@pytest.mark.parametrize("recipients", [TWO, THREE], ids=["two", "three"])
async def test_each_recipient_gets_the_report_in_a_message_of_its_own(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
    recipients: tuple[str, ...],
) -> None:
    task_id = await accepted_task(client, "/reports/daily", {})
    await run_worker(mailing(settings, recipients))

    done = await status_of(client, task_id)
    assert done["status"] == "SUCCESS", done
    assert [mail.recipients for mail in smtp_server.messages] == [[r] for r in recipients]
    day = yesterday(settings).isoformat()
    for mail, recipient in zip(smtp_server.messages, recipients, strict=True):
        assert mail.message["To"] == recipient, "no recipient sees the others' addresses"
        assert mail.message["Subject"] == f"Daily report for {day}"
        assert json.loads(mail.message.get_content())["date"] == day
    assert len({mail.message["Message-ID"] for mail in smtp_server.messages}) == 1


async def test_a_deferred_recipient_is_retried_alone_and_nobody_gets_it_twice(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    smtp_server.replies = ["451 4.3.0 try again later"]  # the first DATA: THREE[0]'s copy
    task_id = await accepted_task(client, "/reports/daily", {})
    await run_worker(mailing(settings, THREE))

    done = await status_of(client, task_id)
    assert done["status"] == "SUCCESS", done
    assert done["attempts"] == 2, "the job ran again for the deferred recipient"
    assert [attempt["outcome"] for attempt in done["history"]] == ["retry", "success"]
    assert "ops@example.com" in done["history"][0]["error"]
    received = sorted(address for mail in smtp_server.messages for address in mail.recipients)
    assert received == sorted(THREE), "each recipient once, although the job ran twice"
    assert smtp_server.messages[-1].recipients == ["ops@example.com"]


async def test_a_refused_recipient_fails_the_job_naming_it_after_the_others_are_mailed(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    smtp_server.replies = ["550 5.1.1 no such mailbox"]
    task_id = await accepted_task(client, "/reports/daily", {})
    await run_worker(mailing(settings, TWO))

    failed = await status_of(client, task_id)
    assert failed["status"] == "FAILURE"
    assert failed["attempts"] == 1, "a refusal will not change on a retry"
    assert "report not mailed to ops@example.com" in failed["error"]
    assert "boss@example.org" not in failed["error"]
    assert [mail.recipients for mail in smtp_server.messages] == [["boss@example.org"]]


def test_every_recipient_is_checked_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPORT_RECIPIENTS", "ops@example.com, boss@example.org, audit@@example")
    with pytest.raises(SettingsError, match=r"REPORT_RECIPIENTS: .*'audit@@example'"):
        load_settings()
    monkeypatch.setenv("REPORT_RECIPIENTS", ",".join(THREE))
    assert load_settings().report_recipients == THREE
    monkeypatch.setenv("REPORT_RECIPIENTS", "ops@example.com, boss@example.org, OPS@Example.com")
    assert load_settings().report_recipients == TWO, "one listed twice is mailed once"


# --- once per day (issue 18.6) ---------------------------------------------------------------


async def reporting_client(
    aiohttp_client: ClientFactory, settings: Settings, recipients: tuple[str, ...], limit: str
) -> tuple[TestClient[Any, Any], Settings]:
    """A client of an app whose REPORT_RECIPIENTS and per-recipient limit are these."""
    reporting = mailing(settings, recipients, rate_limit_per_recipient=limit)
    return await aiohttp_client(create_app(reporting), headers=AUTH_HEADERS), reporting


async def test_fifteen_calls_for_a_day_mail_it_once_and_count_once(
    aiohttp_client: ClientFactory,
    settings: Settings,
    redis: ArqRedis,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    client, reporting = await reporting_client(
        aiohttp_client, settings, ("ops@example.com",), "10/hour"
    )
    first = await accepted_task(client, "/reports/daily", {})
    await run_worker(reporting)
    repeats = [await accepted_task(client, "/reports/daily", {}) for _ in range(14)]
    await run_worker(reporting)  # the 14 repeats run at once

    for task_id in [first, *repeats]:
        assert (await status_of(client, task_id))["status"] == "SUCCESS"
    assert [mail.recipients for mail in smtp_server.messages] == [["ops@example.com"]]
    assert await files.exists(reporting.reports_dir / f"{yesterday(settings)}.json")
    # the one report mail used one of ops@'s 10 an hour: 9 more emails, then 429
    statuses = [
        (await client.post("/send-email", json=email_to("ops@example.com"))).status
        for _ in range(10)
    ]
    assert statuses == [202] * 9 + [429]


async def test_fifteen_calls_queued_together_still_mail_once(
    aiohttp_client: ClientFactory,
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    """15 report jobs for one day running at once: one of them mails, the others do not."""
    client, reporting = await reporting_client(aiohttp_client, settings, TWO, "")
    task_ids = [await accepted_task(client, "/reports/daily", {}) for _ in range(15)]
    await run_worker(reporting)
    for task_id in task_ids:
        assert (await status_of(client, task_id))["status"] == "SUCCESS"
    # one mail per recipient; in no set order, as two jobs may send the two at once (each
    # claims a recipient while the other is still sending to the first one)
    recipients = sorted(mail.recipients for mail in smtp_server.messages)
    assert recipients == sorted([r] for r in TWO)


async def test_resend_mails_again_and_counts_against_the_limit(
    aiohttp_client: ClientFactory,
    settings: Settings,
    redis: ArqRedis,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    client, reporting = await reporting_client(
        aiohttp_client, settings, ("ops@example.com",), "2/hour"
    )
    day = {"day": yesterday(settings).isoformat()}
    await accepted_task(client, "/reports/daily", day)
    await run_worker(reporting)
    await accepted_task(client, "/reports/daily", {**day, "resend": True})
    await run_worker(reporting)
    assert len(smtp_server.messages) == 2, "asked for explicitly: mailed again"

    refused = await client.post("/reports/daily", json={**day, "resend": True})
    await assert_refused(refused, 429, "too many requests for this recipient", redis, settings)
    assert "Retry-After" in refused.headers
    # a plain repeat would mail nothing, so the limit does not stop it: the file is rewritten
    await accepted_task(client, "/reports/daily", day)
    await run_worker(reporting)
    assert len(smtp_server.messages) == 2


async def test_a_recipient_added_later_gets_the_days_report_the_others_do_not_again(
    aiohttp_client: ClientFactory,
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    client, two = await reporting_client(aiohttp_client, settings, TWO, "")
    await accepted_task(client, "/reports/daily", {})
    await run_worker(two)
    await accepted_task(client, "/reports/daily", {})
    await run_worker(mailing(settings, THREE))
    assert [mail.recipients for mail in smtp_server.messages] == [[r] for r in THREE]


async def test_run_now_on_the_dashboard_mails_the_day_once_and_is_limited(
    aiohttp_client: ClientFactory,
    settings: Settings,
    redis: ArqRedis,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    reporting = mailing(settings, ("ops@example.com",), rate_limit_per_recipient="1/hour")
    dashboard = Dashboard(await aiohttp_client(create_app(reporting)))
    assert (await dashboard.sign_in()).status == 303
    run_now = "/dashboard/crons/cron:daily_report/run"
    for _ in range(2):
        response = await dashboard.post(run_now)
        assert response.status == 303, await response.text()
        await run_worker(reporting)
    assert [mail.recipients for mail in smtp_server.messages] == [["ops@example.com"]]

    # the day is mailed; another one would mail ops@ again, over its 1 an hour
    await redis.delete(mailed_key(yesterday(settings), "ops@example.com"))
    refused = await dashboard.post(run_now)
    await assert_refused(refused, 429, "too many requests for this recipient", redis, settings)
    assert len(smtp_server.messages) == 1
