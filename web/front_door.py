"""The HTTP connection itself, before any route runs: the request head's time limit, and the
answers to requests aiohttp's parser refuses.

aiohttp answers a request it cannot parse (a bad request line, headers too long, a stray
byte) from inside its protocol handler, around the app: no middleware and no
``on_response_prepare`` signal sees it (aio-libs/aiohttp#3287, #6463), so the answer said
``Server: Python/3.11 aiohttp/3.x`` and quoted the client's bytes back as text. Here the
protocol handler answers those with the service's own ``Server`` header and a short JSON error,
and closes the connection.

aiohttp also waits for a new connection's request head for as long as its keep-alive timeout
(75 s), however slowly the bytes come; here the head must be complete within
``REQUEST_HEADER_TIMEOUT`` of the connection opening, else the client gets ``408`` and the
connection is closed. (Later requests on a kept-alive connection are bounded by aiohttp's
keep-alive timeout; bodies by web.deadlines.)
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

SERVER = "jobservice"  # the Server header of every answer: no Python or aiohttp versions


def plain_error(status: int, message: str) -> web.Response:
    """A JSON error that closes the connection (what came on it cannot be trusted)."""
    response = web.json_response({"error": message}, status=status, headers={"Server": SERVER})
    response.force_close()
    return response


def _describe(status: int) -> str:
    if status >= 500:
        return "internal server error"
    if status == 400:
        return "malformed HTTP request"
    return f"HTTP request refused: {HTTPStatus(status).phrase.lower()}"


class FrontDoorHandler(RequestHandler):
    """aiohttp's protocol handler with the head's time limit and JSON parser errors."""

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_timer = asyncio.get_running_loop().call_later(
            self._header_timeout, self._head_too_slow
        )

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_timer is not None and self._request_count > 0:  # a whole head came
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_too_slow(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or self._request_count > 0:
            return
        body = json.dumps(
            {"error": f"the request head did not arrive within {self._header_timeout:g} s"}
        ).encode()
        transport.write(
            b"HTTP/1.1 408 Request Timeout\r\n"
            b"Server: " + SERVER.encode() + b"\r\n"
            b"Content-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n"
            b"Connection: close\r\n\r\n" + body
        )
        self.force_close()  # closes the transport once what was written is sent

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's own handling (it logs, and refuses once an answer has begun), then a
        short JSON answer in place of its text, which quotes the request."""
        super().handle_error(request, status, exc, message)
        return plain_error(status, _describe(status))


class FrontDoorServer(web.Server):
    """aiohttp's server, making :class:`FrontDoorHandler` protocol handlers."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return FrontDoorHandler(
            self, header_timeout=self.header_timeout, loop=self._loop, **self._kwargs
        )


class FrontDoorRunner(web.AppRunner):
    """An AppRunner serving the app through :class:`FrontDoorServer`; ``python -m web`` runs
    it in one process, and gunicorn's aiohttp worker in each of WEB_PROCESSES."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # starts the app, as AppRunner does
        return FrontDoorServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            header_timeout=self.header_timeout,
            **made._kwargs,  # the handler options AppRunner gathered (keep-alive, logs...)
        )
