"""An SMTP sink that delays each DATA reply, for the I/O-concurrency scenario.

It advertises PIPELINING (RFC 2920), as Postfix, Exim and Sendmail do: aiosmtpd reads commands
one after the other from its stream, so pipelined ones are answered in order, but it does not
say so by itself.

``python -m bench.sink SMTP_PORT COUNT_PORT DELAY``: accepts every message after ``DELAY``
seconds; ``GET http://127.0.0.1:COUNT_PORT/`` answers how many it has accepted so far.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session


class DelayingSink:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.accepted = 0

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay)
        self.accepted += 1
        return "250 OK"


async def serve(smtp_port: int, count_port: int, delay: float) -> None:
    sink = DelayingSink(delay)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(sink, hostname="sink.local"), "127.0.0.1", smtp_port, backlog=1024
    )

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"accepted": sink.accepted})

    app = web.Application()
    app.router.add_get("/", count)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", count_port).start()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
