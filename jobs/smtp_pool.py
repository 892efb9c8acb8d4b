"""Open SMTP connections kept for reuse, so an email costs MAIL, RCPT and DATA only.

Without it every message pays for a TCP (or TLS) connection, the greeting, EHLO, STARTTLS
and AUTH when configured, and QUIT. The pool keeps up to ``size`` idle connections, newest
first; more may be open at once (the worker's max_jobs bounds them), and the extra ones are
closed after use. Before a connection that sat idle for ``check_after`` seconds or more is
reused, a NOOP checks that the server still holds it (servers close idle sessions, and
restart); one idle longer than ``max_idle`` seconds is closed rather than trusted. Under
load, connections are reused within milliseconds and skip the check.

A failure after the message went out is never retried here: the job's own retry (and its
"sent" marker, see jobs/email.py) decides, exactly as without the pool.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from email.message import EmailMessage

import aiosmtplib

from jobs.context import SmtpConfig

MAX_IDLE = 60.0  # seconds; far below the 5 minutes RFC 5321 asks servers to wait
CHECK_AFTER = 1.0  # seconds idle before a reuse is preceded by a NOOP


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message already in its wire form (jobs.plain_message), with its one recipient."""

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
    _idle: list[tuple[aiosmtplib.SMTP, float]] = field(default_factory=list)

    async def send(self, message: Envelope | EmailMessage) -> None:
        """Send over an idle connection, or a new one; aiosmtplib's exceptions pass through."""
        client = await self._take() or await self._connect()
        try:
            if isinstance(message, Envelope):
                await _send_envelope(client, message)
            else:
                await client.send_message(message)
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

    async def _take(self) -> aiosmtplib.SMTP | None:
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

    async def _connect(self) -> aiosmtplib.SMTP:
        config = self.config
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            use_tls=config.use_tls,
            start_tls=config.start_tls,
            timeout=config.timeout,
        )
        await client.connect()
        return client

    async def _put_back(self, client: aiosmtplib.SMTP) -> None:
        if client.is_connected and len(self._idle) < self.size:
            self._idle.append((client, time.monotonic()))
        else:
            await _quit(client)


async def _send_envelope(client: aiosmtplib.SMTP, envelope: Envelope) -> None:
    """What ``send_message`` does for a message it would flatten to ``envelope.data``."""
    if client.is_ehlo_or_helo_needed:
        await client._ehlo_or_helo_if_needed()
    options = ["BODY=8BITMIME"] if client.supports_extension("8BITMIME") else []
    await client.sendmail(
        envelope.sender, [envelope.recipient], envelope.data, mail_options=options
    )


async def _answers(client: aiosmtplib.SMTP) -> bool:
    try:
        await client.noop()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        return False
    return True


async def _quit(client: aiosmtplib.SMTP) -> None:
    """Say goodbye if the line is still up; a server that already hung up needs nothing."""
    if not client.is_connected:
        client.close()
        return
    with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
        await client.quit()
    client.close()
