"""SMTP PIPELINING (jobs/smtp_session.py): used when the server advertises it, never otherwise.

Delivery and every refusal go through a real aiosmtpd server that advertises PIPELINING (as
Postfix does); two scripted servers pin down the wire: one answers nothing until MAIL, RCPT
and DATA have all arrived (a client waiting for each reply would stall), the other does not
advertise PIPELINING and fails the test if a command arrives before the previous reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from jobs.mail import SmtpConfig
from jobs.mail.mailer import classify
from jobs.mail.smtp_pool import Envelope as Outgoing
from jobs.mail.smtp_pool import SmtpPool
from service.runtime.errors import PermanentError, TransientError
from tests.conftest import free_port

DATA = b"From: jobs@example.com\r\nTo: {to}\r\nSubject: Hi\r\n\r\nHello\r\n.leading dot\r\n"


@dataclass
class PipeliningServer:
    """aiosmtpd advertising PIPELINING; queued replies answer the next MAIL, RCPT or DATA."""

    ehlos: int = 0
    messages: list[tuple[str, str, bytes]] = field(default_factory=list)
    mail_replies: list[str] = field(default_factory=list)
    rcpt_replies: list[str] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
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
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.mail_replies:
            return self.mail_replies.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_replies:
            return self.data_replies.pop(0)
        content = envelope.original_content or b""
        self.messages.append((envelope.mail_from or "", envelope.rcpt_tos[0], content))
        return "250 OK"


@pytest.fixture
def server() -> Iterator[PipeliningServer]:
    handler = PipeliningServer(port=free_port())
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port)
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


def pool_for(port: int, timeout: float = 5) -> SmtpPool:
    config = SmtpConfig(
        host="127.0.0.1", port=port, username=None, password=None, use_tls=False,
        start_tls=False, timeout=timeout, sender="jobs@example.com",
    )  # fmt: skip
    return SmtpPool(config, 10)


def outgoing(to: str) -> Outgoing:
    return Outgoing("jobs@example.com", to, DATA.replace(b"{to}", to.encode()))


async def test_pipelined_messages_arrive_whole(server: PipeliningServer) -> None:
    pool = pool_for(server.port)
    await asyncio.gather(*(pool.send(outgoing(f"u{n}@example.com")) for n in range(5)))
    for n in range(5):
        await pool.send(outgoing(f"v{n}@example.com"))
    assert len(server.messages) == 10
    for sender, recipient, content in server.messages:
        assert sender == "jobs@example.com"
        assert content == DATA.replace(b"{to}", recipient.encode())  # the dot un-stuffed
    await pool.close()


@pytest.mark.parametrize(
    ("replies", "expected", "reason"),
    [
        ({"mail_replies": ["550 5.7.1 refused"]}, PermanentError, "550 5.7.1 refused"),
        ({"mail_replies": ["451 4.3.0 try later"]}, TransientError, "451 4.3.0 try later"),
        ({"rcpt_replies": ["550 5.1.1 no such user"]}, PermanentError, "550 5.1.1 no such user"),
        ({"rcpt_replies": ["450 4.2.1 mailbox busy"]}, TransientError, "450 4.2.1 mailbox busy"),
        ({"data_replies": ["554 5.6.0 rejected"]}, PermanentError, "554 5.6.0 rejected"),
        ({"data_replies": ["452 4.3.1 no space"]}, TransientError, "452 4.3.1 no space"),
    ],
)  # fmt: skip
async def test_refusals_are_classified_as_without_pipelining_and_the_line_stays_usable(
    server: PipeliningServer,
    replies: dict[str, list[str]],
    expected: type[Exception],
    reason: str,
) -> None:
    for name, queued in replies.items():
        setattr(server, name, queued)
    pool = pool_for(server.port)
    with pytest.raises(aiosmtplib.SMTPException) as refused:
        await pool.send(outgoing("nobody@example.com"))
    mapped = classify(refused.value)
    assert isinstance(mapped, expected)
    assert reason in str(mapped)
    await pool.send(outgoing("ann@example.com"))  # the envelope was reset
    assert [recipient for _, recipient, _ in server.messages] == ["ann@example.com"]
    assert server.ehlos == 1
    await pool.close()


async def scripted(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    tcp = await asyncio.start_server(closing, "127.0.0.1", 0)
    async with tcp:
        yield tcp.sockets[0].getsockname()[1]


async def test_mail_rcpt_and_data_leave_together_when_pipelining_is_advertised() -> None:
    received: list[list[bytes]] = []

    async def needs_pipelining(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 ready\r\n")
        await reader.readline()  # EHLO
        writer.write(b"250-scripted\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        # no reply until all three are in: a client waiting for each reply would stall here
        received.append([(await reader.readline()).split()[0] for _ in range(3)])
        writer.write(b"250 sender ok\r\n250 recipient ok\r\n354 go ahead\r\n")
        await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"250 queued\r\n")
        await reader.readline()  # QUIT
        writer.write(b"221 bye\r\n")
        writer.close()

    async for port in scripted(needs_pipelining):
        pool = pool_for(port, timeout=2)
        await pool.send(outgoing("ann@example.com"))
        await pool.close()
    assert received == [[b"MAIL", b"RCPT", b"DATA"]]


async def test_without_pipelining_advertised_each_command_waits_for_its_reply() -> None:
    commands: list[bytes] = []
    early: list[bytes] = []

    async def strict(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 ready\r\n")
        while line := await reader.readline():
            verb = line.split()[0].upper()
            commands.append(verb)
            if verb != b"EHLO":  # anything sent before this reply was pipelined
                with contextlib.suppress(TimeoutError):
                    early.append(await asyncio.wait_for(reader.read(1), 0.05))
            if verb == b"EHLO":
                writer.write(b"250-scripted\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await reader.readuntil(b"\r\n.\r\n")
                writer.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                writer.close()
                return
            else:
                writer.write(b"250 ok\r\n")

    async for port in scripted(strict):
        pool = pool_for(port, timeout=2)
        await pool.send(outgoing("ann@example.com"))
        await pool.close()
    assert early == []
    assert commands == [b"EHLO", b"MAIL", b"RCPT", b"DATA", b"QUIT"]


async def test_a_server_that_never_accepts_the_data_times_out_and_loses_the_line() -> None:
    async def silent_after_data(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 ready\r\n")
        await reader.readline()
        writer.write(b"250-scripted\r\n250 PIPELINING\r\n")
        for _ in range(3):
            await reader.readline()
        writer.write(b"250 ok\r\n250 ok\r\n354 go ahead\r\n")
        await reader.read()  # never answers the message

    async for port in scripted(silent_after_data):
        pool = pool_for(port, timeout=0.2)
        with pytest.raises(aiosmtplib.SMTPTimeoutError) as timed_out:
            await pool.send(outgoing("ann@example.com"))
        assert isinstance(classify(timed_out.value), TransientError)
        assert pool.idle == 0


@pytest.fixture
def tls_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 from a test CA the client's default context trusts."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, cert_file = tmp_path / "ca.pem", tmp_path / "server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # what create_default_context loads
    return ca_file, cert_file


def accept_app_secret(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"secret"
    return AuthResult(success=ok)


# implicit TLS: aiosmtpd cannot tell its own socket is TLS, so AUTH is allowed "without" it
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "tls"])
async def test_pipelining_over_tls_after_login(
    tls_files: tuple[Path, Path], implicit: bool
) -> None:
    _, cert_file = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    await asyncio.to_thread(context.load_cert_chain, str(cert_file))  # reads the file
    handler = PipeliningServer(port=free_port())
    tls: dict[str, Any] = {"ssl_context": context} if implicit else {"tls_context": context}
    controller = Controller(
        handler, hostname="127.0.0.1", port=handler.port, authenticator=accept_app_secret,
        auth_required=True, require_starttls=not implicit, auth_require_tls=not implicit, **tls,
    )  # fmt: skip
    await asyncio.to_thread(controller.start)  # starts a thread and waits for it
    try:
        config = SmtpConfig(
            host="127.0.0.1", port=handler.port, username="app", password="secret",
            use_tls=implicit, start_tls=not implicit, timeout=5, sender="jobs@example.com",
        )  # fmt: skip
        pool = SmtpPool(config, 10)
        for n in range(3):
            await pool.send(outgoing(f"u{n}@example.com"))
        await pool.close()
    finally:
        await asyncio.to_thread(controller.stop)
    assert [recipient for _, recipient, _ in handler.messages] == [
        "u0@example.com", "u1@example.com", "u2@example.com"
    ]  # fmt: skip
    assert handler.ehlos == (1 if implicit else 2)  # STARTTLS: EHLO again over TLS


async def test_an_unsolicited_reply_between_messages_is_not_taken_for_the_next_one() -> None:
    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 ready\r\n")
        await reader.readline()
        writer.write(b"250-scripted\r\n250 PIPELINING\r\n")
        for n in range(2):
            for _ in range(3):
                await reader.readline()
            writer.write(b"250 sender ok\r\n250 recipient ok\r\n354 go ahead\r\n")
            await reader.readuntil(b"\r\n.\r\n")
            # the first message's last reply and, in the same packet, a line nobody asked
            # for: it is there before the client can send anything more
            stray = b"250 stray line nobody asked for\r\n" if n == 0 else b""
            writer.write(b"250 queued\r\n" + stray)
        await reader.readline()  # QUIT, answered: the client need not wait for its timeout
        writer.write(b"221 bye\r\n")
        await reader.read()

    async for port in scripted(chatty):
        pool = pool_for(port, timeout=2)
        await pool.send(outgoing("ann@example.com"))
        await pool.send(outgoing("bob@example.com"))  # a taken stray reply: 250 for DATA
        await pool.close()
