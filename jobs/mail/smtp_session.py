"""One logged-in SMTP connection's mail transactions, pipelined (RFC 2920) when offered.

aiosmtplib opens the connection (greeting, EHLO, STARTTLS, AUTH), but its protocol cannot
pipeline: it holds one parsed reply at a time and drops bytes that arrive meanwhile. So once
the connection is ready, :class:`Session` takes over its transport (asyncio's
``set_protocol``) and sends each message the way ``aiosmtplib.SMTP.sendmail`` does, except
that when the server advertises PIPELINING, MAIL, RCPT and DATA leave in one write and the
message in a second: 2 round trips instead of 4. Without PIPELINING it waits for each reply,
as RFC 2920 requires. Failures raise aiosmtplib's own exceptions (the same ones, for the same
replies), so the pool and jobs.mail.mailer's retry classification see no difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from typing import cast

import aiosmtplib
from aiosmtplib import SMTPResponse

MAX_REPLY = 1 << 16  # bytes buffered without a complete reply before the server is given up
_PERIOD = re.compile(rb"(?m)^\.")
_LINE_ENDINGS = re.compile(rb"(?:\r\n|\n|\r(?!\n))")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


class Session(asyncio.Protocol):
    """The protocol of one connection after aiosmtplib set it up; one transaction at a time."""

    def __init__(
        self, transport: asyncio.Transport, extensions: dict[str, str], timeout: float | None
    ) -> None:
        self.extensions = extensions  # lower-cased EHLO keywords, as aiosmtplib parsed them
        self.timeout = timeout
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._owed = 0  # replies the server owes for what was sent; any other reply is dropped
        self._waiter: asyncio.Future[None] | None = None
        self._lost: aiosmtplib.SMTPException | None = None
        transport.set_protocol(self)

    @classmethod
    async def take_over(cls, client: aiosmtplib.SMTP) -> Session:
        """The session of a client that has connected (and logged in when configured)."""
        if client.is_ehlo_or_helo_needed:
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                await client.helo()
        transport = client.transport
        if transport is None or transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        # uvloop's TLS transport is not an asyncio.Transport subclass, but has its methods
        return cls(
            cast(asyncio.Transport, transport), dict(client.esmtp_extensions), client.timeout
        )

    @property
    def is_connected(self) -> bool:
        return self._lost is None and not self._transport.is_closing()

    def supports(self, extension: str) -> bool:
        return extension.lower() in self.extensions

    async def sendmail(
        self, sender: str, recipient: str, data: bytes, options: list[str], *, utf8: bool = False
    ) -> None:
        """What ``aiosmtplib.SMTP.sendmail(sender, [recipient], data, mail_options=options)``
        does, over fewer round trips when the server pipelines; addresses come checked."""
        encoding = "utf-8" if utf8 else "ascii"
        data = _LINE_ENDINGS.sub(b"\r\n", data)
        if self.supports("size"):
            options = [f"size={len(data)}", *options]
        mail = b" ".join([b"MAIL FROM:<" + sender.encode(encoding) + b">"] + [
            option.encode("ascii") for option in options
        ])  # fmt: skip
        rcpt = b"RCPT TO:<" + recipient.encode(encoding) + b">"
        if _CONTROL.search(mail) or _CONTROL.search(rcpt):
            raise ValueError("Command arg contains a prohibited control character")
        try:
            if self.supports("pipelining"):
                self._write(mail + b"\r\n" + rcpt + b"\r\nDATA\r\n", replies=3)
                replies = (await self._reply(), await self._reply(), await self._reply())
                await self._check_envelope(sender, recipient, *replies)
            else:
                self._write(mail + b"\r\n")
                _check_mail(sender, await self._reply())
                self._write(rcpt + b"\r\n")
                _check_rcpt(recipient, await self._reply())
                self._write(b"DATA\r\n")
                _check_start(await self._reply())
            self._write(_PERIOD.sub(b"..", data) + b".\r\n")
            reply = await self._reply()
            if reply.code != 250:
                raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
            with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
                await self.command(b"RSET")  # reset the envelope, as sendmail does
            raise

    async def _check_envelope(
        self,
        sender: str,
        recipient: str,
        mail: SMTPResponse,
        rcpt: SMTPResponse,
        start: SMTPResponse,
    ) -> None:
        refused = mail.code != 250 or rcpt.code not in (250, 251)
        if refused and start.code == 354:
            # a server that took DATA with no valid recipient gets an empty message ended
            self._write(b".\r\n")
            await self._reply()
        _check_mail(sender, mail)
        _check_rcpt(recipient, rcpt)
        _check_start(start)

    async def command(self, command: bytes) -> SMTPResponse:
        """One command and its reply; a reply other than 250 raises, as aiosmtplib's do."""
        self._write(command + b"\r\n")
        reply = await self._reply()
        if reply.code != 250:
            raise aiosmtplib.SMTPResponseException(reply.code, reply.message)
        return reply

    async def quit(self) -> None:
        """Say goodbye if the line is still up, then close it."""
        if self.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                self._write(b"QUIT\r\n")
                await self._reply()
        self.close()

    def close(self) -> None:
        self._transport.close()

    def _write(self, data: bytes, replies: int = 1) -> None:
        if not self.is_connected:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._owed += replies
        self._transport.write(data)

    async def _reply(self) -> SMTPResponse:
        if not self._replies:
            if self._lost is not None:
                raise self._lost
            self._waiter = waiter = self._loop.create_future()
            timer = None
            if self.timeout is not None:
                timer = self._loop.call_later(self.timeout, _expire, waiter)
            try:
                await waiter
            except TimeoutError:
                self.close()  # a late reply would be paired with the next command
                raise aiosmtplib.SMTPReadTimeoutError(
                    "Timed out waiting for server response"
                ) from None
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if not self._replies:
                assert self._lost is not None
                raise self._lost
        reply = self._replies.popleft()
        if reply.code == 421:  # the server is closing the line: aiosmtplib closes too
            self.close()
        return reply

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            while (reply := self._parse()) is not None:
                if self._owed:  # unsolicited lines are dropped, as aiosmtplib does, so they
                    self._owed -= 1  # cannot be taken for the next command's reply
                    self._replies.append(reply)
        except aiosmtplib.SMTPResponseException as exc:
            self._fail(exc)
            self.close()
        if len(self._buffer) > MAX_REPLY:
            self._fail(aiosmtplib.SMTPResponseException(-1, "Response too long"))
            self.close()
        elif self._replies:
            self._wake()

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        lost = aiosmtplib.SMTPServerDisconnected("Connection lost")
        lost.__cause__ = exc
        self._fail(lost)

    def _fail(self, exc: aiosmtplib.SMTPException) -> None:
        if self._lost is None:
            self._lost = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _parse(self) -> SMTPResponse | None:
        """The first complete reply in the buffer (removed from it), as aiosmtplib parses one."""
        lines: list[bytes] = []
        offset = 0
        while (end := self._buffer.find(b"\n", offset)) != -1:
            line = bytes(self._buffer[offset : end + 1])
            offset = end + 1
            lines.append(line)
            if line[3:4] != b"-":
                del self._buffer[:offset]
                try:
                    code = int(line[:3])
                except ValueError:
                    text = line.decode("utf-8", errors="ignore")
                    raise aiosmtplib.SMTPResponseException(
                        -1, f"Malformed SMTP response line: {text}"
                    ) from None
                message = b"\n".join(part[4:].strip(b" \t\r\n") for part in lines)
                return SMTPResponse(code, message.decode("utf-8", "surrogateescape"))
        return None


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _check_mail(sender: str, reply: SMTPResponse) -> None:
    if reply.code != 250:
        raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)


def _check_rcpt(recipient: str, reply: SMTPResponse) -> None:
    if reply.code not in (250, 251):
        refused = aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
        raise aiosmtplib.SMTPRecipientsRefused([refused])


def _check_start(reply: SMTPResponse) -> None:
    if reply.code != 354:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
