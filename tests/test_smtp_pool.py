"""SMTP connection reuse (jobs/smtp_pool.py) against a real aiosmtpd server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from jobs.mail import SmtpConfig
from jobs.mail.smtp_pool import SmtpPool
from tests.conftest import free_port
from tests.waiting import wait_until


@dataclass
class CountingServer:
    """Counts connections (EHLOs) and messages; queued replies answer the next DATA."""

    ehlos: int = 0
    quits: int = 0
    messages: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    port: int = 0

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        self.ehlos += 1
        session.host_name = hostname
        return responses

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.quits += 1
        return "221 Bye"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.replies:
            return self.replies.pop(0)
        self.messages.append(envelope.rcpt_tos[0])
        return "250 OK"


@pytest.fixture
def server() -> Iterator[tuple[CountingServer, Controller]]:
    handler = CountingServer(port=free_port())
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port)
    controller.start()
    try:
        yield handler, controller
    finally:
        controller.stop()


def pool_for(handler: CountingServer, size: int = 10, check_after: float = 1.0) -> SmtpPool:
    config = SmtpConfig(
        host="127.0.0.1",
        port=handler.port,
        username=None,
        password=None,
        use_tls=False,
        start_tls=False,
        timeout=5,
        sender="jobs@example.com",
    )
    return SmtpPool(config, size, check_after=check_after)


def message(to: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "jobs@example.com"
    mail["To"] = to
    mail["Subject"] = "Hi"
    mail.set_content("Hello")
    return mail


async def test_one_connection_carries_consecutive_emails(
    server: tuple[CountingServer, Controller],
) -> None:
    handler, _ = server
    pool = pool_for(handler)
    for n in range(3):
        await pool.send(message(f"user{n}@example.com"))
    assert handler.messages == ["user0@example.com", "user1@example.com", "user2@example.com"]
    assert handler.ehlos == 1
    await pool.close()
    assert pool.idle == 0
    await wait_until(lambda: _true(handler.quits == 1))


async def test_a_refused_message_leaves_the_connection_usable(
    server: tuple[CountingServer, Controller],
) -> None:
    handler, _ = server
    handler.replies = ["550 5.1.1 no such user"]
    pool = pool_for(handler)
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await pool.send(message("nobody@example.com"))
    assert refused.value.code == 550
    await pool.send(message("ann@example.com"))
    assert handler.messages == ["ann@example.com"]
    assert handler.ehlos == 1
    await pool.close()


async def test_a_connection_the_server_dropped_while_idle_is_replaced() -> None:
    handler = CountingServer(port=free_port())
    pool = pool_for(handler, check_after=0)  # as if it sat idle: checked before reuse
    # aiosmtpd's controller starts and stops a thread and waits for it: not on the loop
    first = Controller(handler, hostname="127.0.0.1", port=handler.port)
    await asyncio.to_thread(first.start)
    try:
        await pool.send(message("ann@example.com"))
    finally:
        await asyncio.to_thread(first.stop)  # closes the idle connection from the server's side
    restarted = Controller(handler, hostname="127.0.0.1", port=handler.port)
    await asyncio.to_thread(restarted.start)
    try:
        await pool.send(message("bob@example.com"))
        assert handler.messages == ["ann@example.com", "bob@example.com"]
        assert handler.ehlos == 2
        await pool.close()
    finally:
        await asyncio.to_thread(restarted.stop)


async def test_at_most_size_connections_stay_open(
    server: tuple[CountingServer, Controller],
) -> None:
    handler, _ = server
    pool = pool_for(handler, size=1)
    await asyncio.gather(*(pool.send(message(f"u{n}@example.com")) for n in range(3)))
    assert len(handler.messages) == 3
    assert handler.ehlos == 3  # three at once need three connections
    assert pool.idle == 1
    await wait_until(lambda: _true(handler.quits == 2))  # the two extra ones said goodbye
    await pool.close()


async def test_size_zero_opens_a_connection_per_email(
    server: tuple[CountingServer, Controller],
) -> None:
    handler, _ = server
    pool = pool_for(handler, size=0)
    await pool.send(message("ann@example.com"))
    await pool.send(message("bob@example.com"))
    assert handler.ehlos == 2
    assert pool.idle == 0


async def test_a_line_dropped_during_the_message_is_not_resent_here() -> None:
    """The pool never re-sends: whether the server took the message is unknown, and the
    email job's retry and "sent" marker decide (jobs/email.py)."""
    received = 0

    async def hangs_up_on_data(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        writer.write(b"220 ready\r\n")
        while line := await reader.readline():
            if line.upper().startswith(b"EHLO"):
                writer.write(b"250 ok\r\n")
            elif line.upper().startswith(b"DATA"):
                received += 1
                writer.close()  # gone before answering
                return
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()

    tcp = await asyncio.start_server(hangs_up_on_data, "127.0.0.1", 0)
    pool = pool_for(CountingServer(port=tcp.sockets[0].getsockname()[1]))
    async with tcp:
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await pool.send(message("ann@example.com"))
    assert received == 1
    assert pool.idle == 0


async def _true(value: bool) -> bool:
    return value
