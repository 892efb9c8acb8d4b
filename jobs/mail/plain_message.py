"""The bytes of one plain-text email, written directly for the common case.

Building an ``EmailMessage`` and flattening it costs ~1.5 ms of CPU per email (header parsing
and refolding), a quarter of the worker's CPU per email. For the message shape jobs send
(From, To, Subject, Message-ID, a ``text/plain; charset="utf-8"`` body) and values that need no
folding, quoting or encoded words, the result is known in advance: :func:`render` writes exactly
the bytes aiosmtplib's ``flatten_message`` writes for the ``EmailMessage`` that
``jobs.mail.mailer.build_message`` builds (tests/test_plain_message.py compares them). It
returns None for anything else (non-ASCII or long headers, an 8bit body, unusual addresses or
ids), and the caller uses the email package, so every other message is encoded exactly as before.
"""

from __future__ import annotations

import binascii
import re
from email import quoprimime

MAX_LINE = 78  # email.policy's max_line_length, for headers and encoded body lines

# an addr-spec the email package writes back unchanged: dot-atoms on both sides, ASCII only
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
_ADDR_SPEC = re.compile(rf"{_DOT_ATOM}@{_DOT_ATOM}")
# printable ASCII words separated by single spaces, no encoded-word look-alikes ("=?")
_PLAIN_TEXT = re.compile(r"[!-~]+(?: [!-~]+)*")
_MESSAGE_ID = re.compile(rf"<[A-Za-z0-9._-]+@{_DOT_ATOM}>")


def render(from_line: bytes, *, to: str, subject: str, body: str, message_id: str) -> bytes | None:
    """The message as the email package would write it, or None when that needs the package.

    ``from_line`` is the folded ``From:`` header with its CRLF, computed once per sender by
    ``jobs.mail.mailer`` with the email package itself.
    """
    if not _ADDR_SPEC.fullmatch(to) or len(to) + 4 > MAX_LINE:
        return None
    if not _PLAIN_TEXT.fullmatch(subject) or "=?" in subject or len(subject) + 9 > MAX_LINE:
        return None
    if not _MESSAGE_ID.fullmatch(message_id) or len(message_id) + 12 > MAX_LINE:
        return None
    encoded = encode_body(body)
    if encoded is None:
        return None
    cte, payload = encoded
    head = (
        f"To: {to}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n"
        f'Content-Type: text/plain; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {cte}\r\nMIME-Version: 1.0\r\n\r\n"
    )
    return from_line + head.encode("ascii") + payload.replace("\n", "\r\n").encode("ascii")


def encode_body(body: str) -> tuple[str, str] | None:
    """What ``EmailMessage.set_content(body)`` picks: 7bit, or the shorter of quoted-printable
    and base64 when a line is too long or not ASCII; None where it would pick 8bit.

    The same choice, step by step, as the standard library's ``email.contentmanager``.
    """
    try:
        lines = body.encode("utf-8").splitlines()
    except UnicodeEncodeError:
        return None  # a lone surrogate: the email package raises, and so must the job

    if max((len(line) for line in lines), default=0) <= MAX_LINE:
        if all(line.isascii() for line in lines):
            return "7bit", b"\n".join(lines).decode("ascii") + "\n"
        return None  # 8bit: the generator may re-encode it, depending on the server
    sniff = b"\n".join(lines[:10]) + b"\n"
    sniff_qp = quoprimime.body_encode(sniff.decode("latin-1"), MAX_LINE)
    if len(sniff_qp) > len(binascii.b2a_base64(sniff)):
        whole = b"\n".join(lines) + b"\n"
        step = MAX_LINE // 4 * 3
        chunks = (whole[i : i + step] for i in range(0, len(whole), step))
        return "base64", "".join(binascii.b2a_base64(chunk).decode("ascii") for chunk in chunks)
    if len(lines) <= 10:
        return "quoted-printable", sniff_qp
    whole = b"\n".join(lines) + b"\n"
    return "quoted-printable", quoprimime.body_encode(whole.decode("latin-1"), MAX_LINE)
