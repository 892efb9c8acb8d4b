"""Local webhook targets: a real aiohttp server on loopback, and a delivery queued at it."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.typedefs import Handler

from tests.conftest import accepted_task

ServerFactory = Any  # pytest-aiohttp's aiohttp_server fixture


class HeldTarget:
    """A webhook target that holds each request until released."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.arrived.set()
        await self.release.wait()
        self.finished += 1
        return web.json_response({"ok": True})


async def hook_url(aiohttp_server: ServerFactory, handler: Handler) -> str:
    """Serve ``handler`` at ``POST /hook`` on a local test server; that URL."""
    app = web.Application()
    app.router.add_post("/hook", handler)
    server: TestServer = await aiohttp_server(app)
    return str(server.make_url("/hook"))


async def queue_webhook(client: TestClient[Any, Any], url: str, payload: Any) -> str:
    """Queue a delivery of ``payload`` to ``url`` through the API; its task id."""
    return await accepted_task(client, "/webhooks", {"url": url, "payload": payload})
