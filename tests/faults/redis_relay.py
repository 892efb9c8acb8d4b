"""A TCP relay in front of a real Redis that holds back one chosen command until told.

A test that needs a process to be "in the middle of writing X" cannot get there by timing
(a sleep, a slow job): X takes milliseconds. Held on the wire, X is certain: the relay sees the
bytes arrive, so the test knows the process has sent them, and Redis runs the command only once
the test lets them through. Every other byte, both ways, passes as it comes.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

CHUNK = 65536


class HoldingRelay:
    """Relays 127.0.0.1:``port`` to Redis on ``redis_port``; the first client bytes holding
    ``hold`` (and all that follow them on that connection) wait for :meth:`release`."""

    def __init__(self, redis_port: int, hold: bytes) -> None:
        self._redis_port = redis_port
        self._hold = hold
        self._released = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._pumps: list[list[asyncio.Task[None]]] = []  # each connection's
        self.held = asyncio.Event()  # set once those bytes have arrived, and are held
        self.received = bytearray()  # every byte a client has sent, held ones included
        self.port = 0

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def release(self) -> None:
        self._released.set()

    async def __aenter__(self) -> HoldingRelay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
        assert self._server is not None
        self._server.close()
        self.cut()  # each connection's handler then closes both its sockets and ends
        if self._handlers:  # one still connecting to Redis has nothing to cut yet: cancelled
            _, connecting = await asyncio.wait(self._handlers, timeout=5)
            for handler in connecting:
                handler.cancel()
            await asyncio.gather(*connecting, return_exceptions=True)
        await self._server.wait_closed()

    def cut(self) -> None:
        """Drop every connection now, as a network failure would: bytes held are lost (the
        relay goes on accepting new connections)."""
        for pumps in self._pumps:
            for pump in pumps:
                pump.cancel()

    async def _serve(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        to_redis: asyncio.StreamWriter | None = None
        pumps: list[asyncio.Task[None]] = []
        try:
            from_redis, to_redis = await asyncio.open_connection("127.0.0.1", self._redis_port)
            chunks: asyncio.Queue[bytes] = asyncio.Queue()
            pumps = [
                asyncio.create_task(self._receive(client, chunks)),
                asyncio.create_task(self._forward(chunks, to_redis)),
                asyncio.create_task(self._pump(from_redis, to_client)),
            ]
            self._pumps.append(pumps)
            # either side closing ends the connection
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            if pumps in self._pumps:
                self._pumps.remove(pumps)
            for writer in (to_client, to_redis):
                if writer is not None:
                    writer.close()
                    try:
                        await asyncio.wait_for(writer.wait_closed(), 2)
                    except (OSError, TimeoutError):  # a peer reading nothing more: drop the rest
                        writer.transport.abort()
            self._handlers.discard(task)

    async def _receive(self, source: asyncio.StreamReader, chunks: asyncio.Queue[bytes]) -> None:
        """Take the client's bytes as they come, held or not (``received`` has them all)."""
        with contextlib.suppress(ConnectionError):
            while data := await source.read(CHUNK):
                self.received += data
                chunks.put_nowait(data)

    async def _forward(self, chunks: asyncio.Queue[bytes], sink: asyncio.StreamWriter) -> None:
        tail = b""  # the pattern may straddle two reads
        with contextlib.suppress(ConnectionError):
            while True:
                data = await chunks.get()
                if not self._released.is_set():
                    seen = tail + data
                    if self._hold in seen:
                        self.held.set()
                        await self._released.wait()
                    tail = seen[-(len(self._hold) - 1) :]
                sink.write(data)
                await sink.drain()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(CHUNK):
                sink.write(data)
                await sink.drain()
