"""jobs.mail.plain_message writes byte for byte what the email package writes, or declines.

Each case renders the message both ways: the direct bytes (when jobs.mail.mailer.render takes the
fast path) must equal aiosmtplib's flattening of jobs.mail.mailer.build_message's EmailMessage, for
both of the flattenings send_message uses (servers with and without 8BITMIME). Cases the fast
path declines are sent as before; some are checked to decline, so the test can fail both ways.
"""

from __future__ import annotations

import dataclasses
import random
from email.message import EmailMessage

import pytest
from aiosmtplib.email import extract_recipients, extract_sender, flatten_message

from jobs.mail import SmtpConfig
from jobs.mail.mailer import build_message, render
from jobs.mail.smtp_pool import Envelope
from service.runtime.errors import PermanentError

CONFIG = SmtpConfig(
    host="127.0.0.1", port=25, username=None, password=None, use_tls=False, start_tls=False,
    timeout=5, sender="Job Service <jobs@example.com>",
)  # fmt: skip
MESSAGE_ID = "<3f0c9a1b2c4d4e5f8a6b7c8d9e0f1a2b@example.com>"

BODIES = [
    "",
    "x",
    "Hi!\n",
    "Line one\nLine two",
    "Hi Ann! " * 20,  # the bench's body: one long line, quoted-printable
    "a" * 78,
    "a" * 79,
    "b" * 500 + "\n" + "short\n" * 12,  # more than ten lines
    "windows\r\nline\rends\n\n\n",
    ". a leading dot\n.\n..\nFrom the start\n",
    "trailing spaces   \nand\ttabs\t\n",
    "=?utf-8?q?not_a_word?= = = =3D\n" * 3,
    "Grüße aus Köln! " * 10,  # non-ASCII, long: quoted-printable or base64
    "日本語のテキスト" * 30,  # base64 wins
    "\x00\x01\x7f control\n" * 20,
    "x" * 2000,
]
SUBJECTS = ["Hello", "Welcome Ann Lee!", "a b c", "x" * 69, "Re: [ticket #42] it's {done}"]
RECIPIENTS = ["ann@example.com", "a.b+c@sub.example.org", "o'neil@x.io", "x@y"]


def email_package_bytes(to: str, subject: str, body: str, cte_type: str) -> bytes:
    message = build_message(CONFIG, to=to, subject=subject, body=body, message_id=MESSAGE_ID)
    return flatten_message(message, cte_type=cte_type)


def fast(to: str, subject: str, body: str) -> Envelope:
    rendered = render(CONFIG, to=to, subject=subject, body=body, message_id=MESSAGE_ID)
    assert isinstance(rendered, Envelope), (to, subject, body)
    return rendered


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("cte_type", ["8bit", "7bit"])
def test_bodies_match_the_email_package(body: str, cte_type: str) -> None:
    for subject in SUBJECTS:
        for to in RECIPIENTS:
            assert fast(to, subject, body).data == email_package_bytes(to, subject, body, cte_type)


def test_random_ascii_bodies_match_the_email_package() -> None:
    rng = random.Random(4)
    alphabet = "ab .=\t\r\n\x00~-" + "x" * 5
    for _ in range(300):
        body = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 400)))
        assert fast("ann@example.com", "Hi", body).data == email_package_bytes(
            "ann@example.com", "Hi", body, "8bit"
        )


def test_envelope_addresses_are_the_ones_send_message_extracts() -> None:
    for to in RECIPIENTS:
        envelope = fast(to, "Hello", "Hi!\n")
        message = build_message(CONFIG, to=to, subject="Hello", body="Hi!\n", message_id=MESSAGE_ID)
        assert envelope.sender == extract_sender(message) == "jobs@example.com"
        assert [envelope.recipient] == extract_recipients(message)


@pytest.mark.parametrize(
    ("to", "subject", "body", "message_id"),
    [
        ("ann@example.com", "Grüße", "x", MESSAGE_ID),  # encoded word
        ("ann@example.com", "x" * 70, "x", MESSAGE_ID),  # folded
        ("ann@example.com", "two  spaces", "x", MESSAGE_ID),
        ("ann@example.com", " leading", "x", MESSAGE_ID),
        ("ann@example.com", "=?utf-8?q?hi?=", "x", MESSAGE_ID),
        ("ann@example.com", "", "x", MESSAGE_ID),
        ("Ann Lee <ann@example.com>", "Hello", "x", MESSAGE_ID),  # display name
        ('"a b"@example.com', "Hello", "x", MESSAGE_ID),  # quoted local part
        ("anné@example.com", "Hello", "x", MESSAGE_ID),  # SMTPUTF8
        ("ann@example.com", "Hello", "Grüße\n", MESSAGE_ID),  # 8bit body
        ("ann@example.com", "Hello", "x", "<a b@example.com>"),
        ("ann@example.com", "Hello", "x", "<" + "a" * 70 + "@example.com>"),
    ],
)
def test_everything_else_goes_through_the_email_package(
    to: str, subject: str, body: str, message_id: str
) -> None:
    rendered = render(CONFIG, to=to, subject=subject, body=body, message_id=message_id)
    assert isinstance(rendered, EmailMessage)


def test_an_unencodable_body_fails_as_with_the_email_package() -> None:
    with pytest.raises(UnicodeEncodeError):
        render(
            CONFIG, to="ann@example.com", subject="Hi", body="\ud800" * 100, message_id=MESSAGE_ID
        )


def test_a_non_ascii_sender_name_is_encoded_as_the_email_package_does() -> None:
    config = dataclasses.replace(CONFIG, sender="Jöb Sérvice <jobs@example.com>")
    rendered = render(config, to="ann@example.com", subject="Hi", body="x", message_id=MESSAGE_ID)
    assert isinstance(rendered, Envelope)
    message = build_message(
        config, to="ann@example.com", subject="Hi", body="x", message_id=MESSAGE_ID
    )
    assert rendered.data == flatten_message(message)
    assert b"From: =?utf-8?" in rendered.data


def test_a_non_ascii_sender_address_goes_through_the_email_package() -> None:
    config = dataclasses.replace(CONFIG, sender="Jöb <jöbs@example.com>")
    rendered = render(config, to="ann@example.com", subject="Hi", body="x", message_id=MESSAGE_ID)
    assert isinstance(rendered, EmailMessage)


@pytest.mark.parametrize(
    ("to", "subject"),
    [("ann@example.com\r\nBcc: eve@example.com", "Hi"), ("ann@example.com", "Hi\nBcc: eve@x"),
     ("ann@example.com, eve@example.com", "Hi"), ("ann@example.com\u2028", "Hi")],
)  # fmt: skip
def test_header_injection_is_refused_before_either_path(to: str, subject: str) -> None:
    with pytest.raises(PermanentError):
        render(CONFIG, to=to, subject=subject, body="x", message_id=MESSAGE_ID)
