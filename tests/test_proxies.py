"""TRUSTED_PROXIES (web/proxies.py): forwarded headers count from trusted proxies, and only them.

The test client connects from 127.0.0.1: once as a stranger (the trusted proxy is 127.0.0.9),
whose X-Forwarded-* headers must change nothing, and once as the trusted proxy itself. A real
TLS-terminating nginx in front of the app: tests/test_behind_nginx.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from settings import Settings
from tests.conftest import ClientFactory
from tests.dashboard_client import Dashboard
from web import create_app

SITE = "https://jobs.example.org"
AS_IF_HTTPS = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "jobs.example.org"}
SIGN_IN_BUDGET = 10  # web/ratelimit.py's SIGN_IN_LIMIT, a minute


async def _dashboard(
    aiohttp_client: ClientFactory, settings: Settings, trusted: tuple[str, ...]
) -> Dashboard:
    app = create_app(settings.model_copy(update={"trusted_proxies": trusted}))
    client: TestClient[Any, Any] = await aiohttp_client(app)
    return Dashboard(client)


async def test_forwarded_headers_from_anyone_else_change_nothing(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    board = await _dashboard(aiohttp_client, settings, ("127.0.0.9",))
    # the site it claims to be is not the one it reached: cross-site, refused
    spoofed = await board.sign_in_from(SITE, {**AS_IF_HTTPS, "X-Forwarded-For": "203.0.113.7"})
    assert spoofed.status == 403, await spoofed.text()
    assert "cross-site" in await spoofed.text()
    # from its own origin it signs in over plain http: no Secure cookie, no HSTS
    response = await board.sign_in_from(board.origin, AS_IF_HTTPS)
    assert response.status == 303, await response.text()
    assert response.cookies["jobsvc_session"]["secure"] == ""
    assert "Strict-Transport-Security" not in response.headers
    # a new X-Forwarded-For per attempt does not buy a new sign-in budget
    for n in range(SIGN_IN_BUDGET - 1):  # the sign-in above counted; the refusal did not
        wrong = await board.sign_in_from(
            board.origin, {"X-Forwarded-For": f"198.51.100.{n}"}, token="x" * 20
        )
        assert wrong.status == 403
    refused = await board.sign_in_from(board.origin, {"X-Forwarded-For": "198.51.100.200"})
    assert refused.status == 429, "the budget is the connection's address, whatever it claims"


async def test_a_trusted_proxy_is_believed(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    board = await _dashboard(aiohttp_client, settings, ("127.0.0.0/30",))
    headers = {**AS_IF_HTTPS, "X-Forwarded-For": "203.0.113.7"}
    response = await board.sign_in_from(SITE, headers)
    assert response.status == 303, await response.text()
    assert response.cookies["jobsvc_session"]["secure"] is True
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
    # an error answer over HTTPS carries it too
    missing = await board.client.get("/task-status/nope", headers=headers)
    assert missing.status == 401
    assert "Strict-Transport-Security" in missing.headers
    # each client the proxy names has its own sign-in budget; a client's own X-Forwarded-For
    # entry, left of the one the proxy added, is not believed
    for _ in range(SIGN_IN_BUDGET):
        wrong = await board.sign_in_from(
            SITE, {**AS_IF_HTTPS, "X-Forwarded-For": "198.51.100.1"}, token="x" * 20
        )
        assert wrong.status == 403
    spoofed = {**AS_IF_HTTPS, "X-Forwarded-For": "203.0.113.7, 198.51.100.1"}
    assert (await board.sign_in_from(SITE, spoofed)).status == 429
    assert (await board.sign_in_from(SITE, headers)).status == 303


@pytest.mark.parametrize("value", ["not-an-address", "203.0.113.7:5000"])
async def test_a_malformed_forwarded_for_from_a_trusted_proxy_is_a_400(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis, value: str
) -> None:
    board = await _dashboard(aiohttp_client, settings, ("127.0.0.1",))
    response = await board.sign_in_from(SITE, {**AS_IF_HTTPS, "X-Forwarded-For": value})
    assert response.status == 400
    assert response.content_type == "application/json"
