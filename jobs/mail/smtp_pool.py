"""Open SMTP connections kept for reuse, so an email costs MAIL, RCPT and DATA only.

aiosmtplib opens each connection; jobs/mail/smtp_session.py then sends over it, pipelining MAIL,
RCPT and DATA when the server offers PIPELINING.

Without it every message pays for a TCP (or TLS) connection, the greeting, EHLO, STARTTLS
and AUTH when configured (AUTH only over TLS: jobs/mail/smtp_login.py), and QUIT. The pool
keeps up to ``size`` idle connections, newest first; more may be open at once (the worker's
max_jobs bounds them), and the extra ones are closed after use. Before a connection that sat
idle for ``check_after`` seconds or more is reused, a NOOP checks that the server still holds
it (servers close idle sessions, and restart); one idle longer than ``max_idle`` seconds is
closed rather than trusted. Under load, connections are reused within milliseconds and skip
the check.

A failure after the message went out is never retried here: the job's own retry (and its
"sent" marker, see jobs/email.py) decides, exactly as without the pool.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from email.message import EmailMessage

import aiosmtplib
from aiosmtplib.email import extract_recipients, extract_sender, flatten_message, parse_address

from jobs.mail.config import SmtpConfig
from jobs.mail.smtp_login import log_in, start_tls_mode
from jobs.mail.smtp_session import Session

MAX_IDLE = 60.0  # seconds; far below the 5 minutes RFC 5321 asks servers to wait
CHECK_AFTER = 1.0  # seconds idle before a reuse is preceded by a NOOP


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message already in its wire form (jobs.mail.plain_message), with its one recipient."""

    sender: str
    recipient: str
    data: bytes


@dataclass
class SmtpPool:
    """Connections to one SMTP server; one pool per worker process, shared by its jobs."""

    config: SmtpConfig
    size: int
    max_idle: float = MAX_IDLE
    check_after: float = CHECK_AFTER
    _idle: list[tuple[Session, float]] = field(default_factory=list)

    async def send(self, message: Envelope | EmailMessage) -> None:
        """Send over an idle connection, or a new one; aiosmtplib's exceptions pass through."""
        client = await self._take() or await self._connect()
        try:
            if isinstance(message, Envelope):
                options = ["BODY=8BITMIME"] if client.supports("8bitmime") else []
                await client.sendmail(message.sender, message.recipient, message.data, options)
            else:
                await _send_message(client, message)
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
            await self._put_back(client)  # the server answered; aiosmtplib reset the envelope
            raise
        except BaseException:
            client.close()  # timed out or dropped mid-way: its state is unknown
            raise
        await self._put_back(client)

    async def close(self) -> None:
        """QUIT every idle connection (the worker's shutdown)."""
        while self._idle:
            client, _ = self._idle.pop()
            await _quit(client)

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def _take(self) -> Session | None:
        now = time.monotonic()
        while self._idle:
            client, since = self._idle.pop()
            idle_for = now - since
            if not client.is_connected or idle_for >= self.max_idle:
                await _quit(client)
            elif idle_for < self.check_after or await _answers(client):
                return client
            else:
                client.close()
        return None

    async def _connect(self) -> Session:
        config = self.config
        # no credentials here: jobs.mail.smtp_login logs in, once it knows the line is TLS
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            use_tls=config.use_tls,
            start_tls=start_tls_mode(config),
            timeout=config.timeout,
        )
        await client.connect()
        try:
            await log_in(client, config)
            return await Session.take_over(client)
        except BaseException:
            client.close()
            raise

    async def _put_back(self, client: Session) -> None:
        if client.is_connected and len(self._idle) < self.size:
            self._idle.append((client, time.monotonic()))
        else:
            await _quit(client)


async def _send_message(client: Session, message: EmailMessage) -> None:
    """What ``aiosmtplib.SMTP.send_message`` does with the messages jobs build (one recipient)."""
    sender, recipients = extract_sender(message), extract_recipients(message)
    if sender is None:
        raise ValueError("No From header provided in message")
    if len(recipients) != 1:
        raise ValueError("exactly one recipient header address expected")
    utf8 = not (sender + recipients[0]).isascii()
    options = []
    if utf8:
        if not client.supports("smtputf8"):
            raise aiosmtplib.SMTPNotSupported(
                "An address containing non-ASCII characters was provided, but "
                "SMTPUTF8 is not supported by this server"
            )
        options.append("SMTPUTF8")
    eight_bit = client.supports("8bitmime")
    if eight_bit:
        options.append("BODY=8BITMIME")
    data = flatten_message(message, utf8=utf8, cte_type="8bit" if eight_bit else "7bit")
    sender, recipient = parse_address(sender), parse_address(recipients[0])
    await client.sendmail(sender, recipient, data, options, utf8=utf8)


async def _answers(client: Session) -> bool:
    try:
        await client.command(b"NOOP")
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        return False
    return True


async def _quit(client: Session) -> None:
    """Say goodbye if the line is still up; a server that already hung up needs nothing."""
    await client.quit()
