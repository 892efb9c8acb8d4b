"""Building and sending one email with aiosmtplib, sorting failures into transient or permanent.

Transient: the server could not be reached, timed out, dropped the line or answered 4xx.
Permanent: it answered 5xx (bad recipient, rejected content, failed auth): retrying would
only repeat the refusal, so the job fails at once with the server's reply in its error.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import getaddresses

import aiosmtplib
from aiosmtplib.email import extract_sender, flatten_message

from jobs.mail import plain_message
from jobs.mail.config import MailContext, SmtpConfig
from jobs.mail.smtp_pool import Envelope, SmtpPool
from service.runtime import (
    PermanentError,
    TransientError,
    connection_problem,
    count_today,
    text_refusal,
)


def build_message(
    config: SmtpConfig, *, to: str, subject: str, body: str, message_id: str
) -> EmailMessage:
    """A plain-text message; the sender is always the configured MAIL_FROM.

    The web app validates ``to`` and ``subject`` already; they are checked again here because
    a job can be queued by other code, and one bad header value must not become new headers
    or extra recipients.
    """
    _check_recipient(to, subject)
    message = EmailMessage()
    message["From"] = config.sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message.set_content(body)
    return message


def render(
    config: SmtpConfig, *, to: str, subject: str, body: str, message_id: str
) -> Envelope | EmailMessage:
    """The message ready to send: its bytes when jobs.mail.plain_message can write them (the common
    case, byte for byte what the email package writes), else :func:`build_message`'s object.
    """
    _check_recipient(to, subject)
    sender = _sender(config.sender)
    if sender is not None:
        from_line, envelope_sender = sender
        data = plain_message.render(
            from_line, to=to, subject=subject, body=body, message_id=message_id
        )
        if data is not None:
            return Envelope(envelope_sender, to, data)
    return build_message(config, to=to, subject=subject, body=body, message_id=message_id)


@functools.lru_cache(maxsize=8)
def _sender(sender: str) -> tuple[bytes, str] | None:
    """The folded From header and the envelope sender, as the email package and aiosmtplib
    derive them; None when either is not ASCII (SMTPUTF8 and encoded words: the slow path).
    """
    message = EmailMessage()
    message["From"] = sender
    from_line = flatten_message(message).removesuffix(b"\r\n")
    envelope_sender = extract_sender(message)
    if envelope_sender is None or not envelope_sender.isascii() or not from_line.isascii():
        return None
    return from_line, envelope_sender


def _check_recipient(to: str, subject: str) -> None:
    _check_header("recipient", to)
    _check_header("subject", subject)
    if len(getaddresses([to])) != 1 or "," in to or ";" in to:
        raise PermanentError("refused: the recipient must be exactly one address")


def _check_header(name: str, value: str) -> None:
    if (reason := text_refusal(value)) is not None:
        raise PermanentError(f"refused: the {name} {reason}")


def message_id_for(job_id: str, config: SmtpConfig) -> str:
    """Derived from the job id, so a re-sent copy carries the same id and can be deduplicated."""
    return f"<{job_id}@{_domain(config.sender)}>"


@functools.lru_cache(maxsize=8)
def _domain(sender: str) -> str:
    _, address = getaddresses([sender])[0]
    return Address(addr_spec=address).domain if "@" in address else "localhost"


def _reply(code: int, message: str) -> str:
    return f"{code} {message}".strip()


def classify(exc: aiosmtplib.SMTPException) -> TransientError | PermanentError:
    """Map an aiosmtplib failure onto the retry policy."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in exc.recipients]
        replies = "; ".join(_reply(r.code, r.message) for r in exc.recipients)
        if codes and all(400 <= code < 500 for code in codes):
            # one mailbox's trouble (greylisting, full): the server itself is fine
            return TransientError(
                f"recipient deferred by SMTP server: {replies}", destination_fault=False
            )
        return PermanentError(f"recipient refused by SMTP server: {replies}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        reply = _reply(exc.code, exc.message)
        if 400 <= exc.code < 500:
            # 421: the server is closing the channel ("try again later"): its breaker opens
            return TransientError(
                f"SMTP server deferred the message: {reply}", unavailable=exc.code == 421
            )
        if exc.code >= 500:
            return PermanentError(f"SMTP server refused the message: {reply}")
        return TransientError(f"unexpected SMTP reply: {reply}")
    # aiosmtplib's own texts name the server ("Error connecting to <host> on port <port>"):
    # the client gets a short reason, the log the exception this is raised from
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        return TransientError("SMTP server timed out")
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return TransientError("SMTP server unreachable (connection closed)")
    if isinstance(exc, aiosmtplib.SMTPConnectError):
        return TransientError(f"SMTP server unreachable ({connection_problem(exc)})")
    return PermanentError(f"SMTP error ({type(exc).__name__})")


OnAccepted = Callable[[], Awaitable[None]]


async def deliver(
    pool: SmtpPool, message: Envelope | EmailMessage, on_accepted: OnAccepted | None = None
) -> None:
    """Send one message over the worker's open connections (jobs/mail/smtp_pool.py); raises
    TransientError or PermanentError on failure.

    ``on_accepted`` runs as soon as the server has accepted the message: a job records "sent"
    there, so the moment in which a killed worker's re-run would send again (data sent,
    record not yet written) is the server's reply time plus that one write.
    """
    try:
        await pool.send(message)
        if on_accepted is not None:
            await on_accepted()
    except aiosmtplib.SMTPException as exc:
        raise classify(exc) from exc
    except (OSError, TimeoutError) as exc:
        raise TransientError(f"SMTP server unreachable ({connection_problem(exc)})") from exc


async def send_mail(
    ctx: MailContext, *, to: str, subject: str, body: str, on_accepted: OnAccepted | None = None
) -> str:
    """Send one message for the running job and count it; returns its Message-ID."""
    config = ctx["smtp"]
    message_id = message_id_for(ctx["job_id"], config)
    message = render(config, to=to, subject=subject, body=body, message_id=message_id)

    async def accepted() -> None:
        # the job's "sent" record and the day's count leave together: one round trip through
        # the worker's auto-pipelined client (service.store.autopipeline), not two in a row
        ctx["metrics"].emails_sent.inc()
        count = count_today(ctx["redis"], ctx["settings"].timezone, emails_sent=1)
        await (asyncio.gather(on_accepted(), count) if on_accepted is not None else count)

    await deliver(ctx["smtp_pool"], message, accepted)
    return message_id
