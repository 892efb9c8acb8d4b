"""``python -m tests.netns_door FOLDER NAME=HOST:PORT...``: unix sockets into a test network.

Run inside a test host's namespace (tests/netns.py), it listens on ``FOLDER/NAME`` for each
pair, a unix socket the test process opens from the machine's own namespace (a unix socket is
a file, not a network address), and forwards every connection to ``HOST:PORT`` over the test
network. So the test reaches the web host through a real TCP connection from another test
host, and no address of the test network is ever added to the machine's own namespace.
``FOLDER/ready`` appears once every socket listens.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

CHUNK = 65536
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()  # a half-close passes through; the other direction carries on


def _forwarder(host: str, port: int) -> Handler:
    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()  # the client sees the connection refused as a closed one
            return
        pipes = [
            asyncio.ensure_future(_pipe(reader, target_writer)),
            asyncio.ensure_future(_pipe(target_reader, writer)),
        ]
        try:
            await asyncio.gather(*pipes)
        except OSError:
            pass  # one side reset the connection: the other is closed with it
        finally:
            for pipe in pipes:
                pipe.cancel()
            writer.close()
            target_writer.close()

    return forward


async def main(folder: Path, pairs: list[str]) -> None:
    servers = []
    for pair in pairs:
        name, target = pair.split("=", 1)
        host, port = target.rsplit(":", 1)
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        servers.append(await asyncio.start_unix_server(_forwarder(host, int(port)), path))
    (folder / "ready").touch()
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2:]))
