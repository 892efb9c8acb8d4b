"""One rule for free text that can reach a mail header: no control, format or invisible characters.

Bidi overrides (U+202E), zero-width characters (U+200B), byte-order marks (U+FEFF) and fillers
that render as nothing (U+3164) let a name or subject show one thing in a mail client and hold
another. They are refused at the door (400, nothing queued, nothing stored) and again by the
job, for a job queued by other code.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.queue.enqueue import enqueue
from service.runtime.text import unsafe_character
from service.store.database import open_database
from settings import Settings
from tests.conftest import RunWorker, SmtpRecorder, assert_refused, queued, status_of

INVISIBLES = {
    "U+202E": "\u202e",  # right-to-left override (Cf)
    "U+2066": "\u2066",  # left-to-right isolate (Cf)
    "U+200B": "\u200b",  # zero-width space (Cf)
    "U+200D": "\u200d",  # zero-width joiner (Cf)
    "U+FEFF": "\ufeff",  # byte-order mark, zero-width no-break space (Cf)
    "U+00AD": "\u00ad",  # soft hyphen (Cf)
    "U+E0041": "\U000e0041",  # tag letter A (Cf)
    "U+3164": "\u3164",  # Hangul filler: a letter that renders as nothing
    "U+034F": "\u034f",  # combining grapheme joiner: invisible, not Cf
}
SPOOF = "Invoice \u202egnp.exe"  # shows as "Invoice exe.png"


@pytest.mark.parametrize("code", sorted(INVISIBLES))
async def test_an_invisible_in_a_subject_is_400_and_sends_nothing(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    smtp_server: SmtpRecorder,
    code: str,
) -> None:
    subject = f"Pay{INVISIBLES[code]}ment"
    response = await client.post(
        "/send-email", json={"to": "a@example.com", "subject": subject, "body": "x"}
    )
    await assert_refused(response, 400, "subject", redis, settings)
    assert code in (await response.json())["error"]
    assert smtp_server.messages == []


@pytest.mark.parametrize("code", sorted(INVISIBLES))
async def test_an_invisible_in_a_registration_name_is_400_and_creates_nothing(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, code: str
) -> None:
    response = await client.post(
        "/register", json={"name": f"Ann{INVISIBLES[code]}Lee", "email": "ann@example.com"}
    )
    await assert_refused(response, 400, "name", redis, settings)
    db = await open_database(settings)
    try:
        assert await db.get_user(1) is None
    finally:
        await db.close()


async def test_post_jobs_applies_the_same_rule(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    kwargs = {"to": "a@example.com", "subject": SPOOF, "body": "x"}
    response = await client.post("/jobs", json={"function": "send_email", "kwargs": kwargs})
    await assert_refused(response, 400, "kwargs.subject", redis, settings)


async def test_a_job_that_skipped_the_door_fails_and_sends_nothing(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    task_id = await enqueue(
        redis, "send_email", {"to": "a@example.com", "subject": SPOOF, "body": "x"}
    )
    await run_worker()
    failed = await status_of(client, task_id)
    assert failed["status"] == "FAILURE"
    assert failed["attempts"] == 1, "the same text will not get better by retrying"
    assert "subject" in failed["error"]
    assert "U+202E" in failed["error"]
    assert smtp_server.messages == []


async def test_a_stored_name_with_an_invisible_never_reaches_the_welcome_subject(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    """A user row written before the rule (or by other code) is checked again by the job."""
    db = await open_database(settings)
    try:
        user = await db.create_user("Ann\u200bLee", "ann@example.com")
    finally:
        await db.close()
    task_id = await enqueue(redis, "send_welcome_email", {"user_id": user.id})
    await run_worker()
    failed = await status_of(client, task_id)
    assert failed["status"] == "FAILURE"
    assert "U+200B" in failed["error"]
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    "text",
    [
        "Café, naïve Ünïcödé",
        "日本語の件名",
        "I \u2764\ufe0f it",  # an emoji with its presentation selector
        "Ünïcödé \u00a0with a no-break space",
        "שלום עולם",  # right-to-left text needs no override
    ],
)
async def test_ordinary_text_in_any_script_passes(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
    text: str,
) -> None:
    response = await client.post(
        "/send-email", json={"to": "a@example.com", "subject": text, "body": "x"}
    )
    assert response.status == 202, await response.text()
    assert len(await queued(redis, settings)) == 1
    await run_worker()
    [mail] = smtp_server.messages
    assert mail.message["Subject"] == text


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("plain", None),
        ("a\rb", "U+000D"),
        ("a\u2028b", "U+2028"),
        ("a\u0085b", "U+0085"),
        ("a\u202eb", "U+202E"),
        ("a\ufeff", "U+FEFF"),
        ("\ud800", "U+D800"),
        ("a\uffa0b", "U+FFA0"),
    ],
)
def test_the_rule_names_the_first_character_it_refuses(text: str, found: str | None) -> None:
    assert unsafe_character(text) == found
