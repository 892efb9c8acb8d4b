"""A listener on a dead Redis's port that counts the connections made to it.

With Redis gone, every reconnect a client makes is refused by the kernel, which nobody can
count from outside the client. Listening on the port instead, accepting each connection and
closing it at once, fails the client the same way (its command gets no reply) and counts
every attempt it makes, so a test can measure how fast a worker reconnects.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class CountingPort:
    """Accept and close every connection to 127.0.0.1:``port``; ``accepted`` counts them."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.accepted = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> CountingPort:
        self._server = await asyncio.start_server(self._refuse, "127.0.0.1", self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _refuse(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()
