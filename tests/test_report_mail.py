"""The daily report's mail: one message to each of REPORT_RECIPIENTS, once per report."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from settings import Settings, SettingsError, load_settings
from tests.conftest import RunWorker, SmtpRecorder, accepted_task, status_of

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
