"""RATE_LIMIT_PER_RECIPIENT counts the mailbox, not the spelling: sub-addresses (``+tag``) and
Gmail's dots reach one inbox, so they share one budget; mail still goes to the address given."""

from __future__ import annotations

import pytest
from arq.connections import ArqRedis

from service.store.database import open_database
from settings import Settings
from tests.conftest import ClientFactory, RunWorker, SmtpRecorder, queued
from tests.test_ratelimit import client_with, email_to
from web.mailboxes import canonical_mailbox


async def test_sub_addresses_share_the_victims_budget_for_emails_and_registrations(
    aiohttp_client: ClientFactory,
    settings: Settings,
    redis: ArqRedis,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    client = await client_with(aiohttp_client, settings, rate_limit_per_recipient="10/hour")
    statuses = [
        (await client.post("/send-email", json=email_to(f"victim+{n}@example.com"))).status
        for n in range(15)
    ]
    assert statuses == [202] * 10 + [429] * 5
    registrations = []
    for n in range(12):
        form = {"name": f"R{n}", "email": f"victim+r{n}@example.com"}
        response = await client.post("/register", json=form)
        registrations.append(response.status)
        assert "Retry-After" in response.headers
    assert registrations == [429] * 12
    assert len(await queued(redis, settings)) == 10, "nothing queued beyond the limit"
    limiter_keys = [key.decode() for key in await redis.keys("jobsvc:ratelimit*")]
    assert limiter_keys, "the limit is counted in Redis"
    assert not [key for key in limiter_keys if "victim" in key], "keys hold a digest only"
    db = await open_database(settings)
    try:
        assert await db.get_user(1) is None, "a refused registration creates no user"
    finally:
        await db.close()

    await run_worker()
    delivered = sorted(address for mail in smtp_server.messages for address in mail.recipients)
    assert delivered == sorted(f"victim+{n}@example.com" for n in range(10)), (
        "each message goes to the address it was sent to, tag and all"
    )
    other = await client.post("/send-email", json=email_to("someone.else@example.com"))
    assert other.status == 202, "another mailbox keeps its own budget"


async def test_gmail_dots_and_googlemail_are_one_mailbox(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    client = await client_with(aiohttp_client, settings, rate_limit_per_recipient="3/hour")
    spellings = [
        "victim@gmail.com",
        "v.i.c.t.i.m@gmail.com",
        "Victim+news@GoogleMail.com",
        "vic.tim+x@gmail.com",
    ]
    statuses = [(await client.post("/send-email", json=email_to(a))).status for a in spellings]
    assert statuses == [202, 202, 202, 429]
    assert len(await queued(redis, settings)) == 3
    # dots matter elsewhere: these are two mailboxes at example.com
    assert (await client.post("/send-email", json=email_to("a.b@example.com"))).status == 202
    assert (await client.post("/send-email", json=email_to("ab@example.com"))).status == 202


@pytest.mark.parametrize(
    ("address", "mailbox"),
    [
        ("Ann@Example.com", "ann@example.com"),
        ("ann+news@example.com", "ann@example.com"),
        ("ann+a+b@example.com", "ann@example.com"),
        ("a.n.n@example.com", "a.n.n@example.com"),
        ("A.n.N+x@gmail.com", "ann@gmail.com"),
        ("ann@googlemail.com", "ann@gmail.com"),
        ("+only-a-tag@example.com", "+only-a-tag@example.com"),
    ],
)
def test_canonical_mailbox(address: str, mailbox: str) -> None:
    assert canonical_mailbox(address) == mailbox
