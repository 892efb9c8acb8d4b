"""The dashboard behind a real TLS-terminating nginx on loopback (TRUSTED_PROXIES).

nginx (tests/nginx.py) serves https://127.0.0.1:<port> with a trustme certificate and passes
requests to the app over plain http from 127.0.0.9, the only trusted proxy, adding
X-Forwarded-For/-Proto/-Host. Clients connect to nginx from their own loopback addresses
(127.0.0.2, 127.0.0.3), as two people on two machines would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from arq.connections import ArqRedis
from pytest_aiohttp import AiohttpServer

from service.queue.enqueue import enqueue
from settings import Settings
from tests.conftest import TEST_API_TOKEN, RunWorker, queued
from tests.dashboard_client import CSRF_META
from tests.nginx import PROXY_ADDRESS, Nginx, tls_proxy
from web import create_app

ANN, BOB = "127.0.0.2", "127.0.0.3"  # two clients' own addresses
SIGN_IN_BUDGET = 10  # web/ratelimit.py's SIGN_IN_LIMIT, a minute


@pytest.fixture
async def app_server(
    aiohttp_server: AiohttpServer, settings: Settings, redis: ArqRedis
) -> TestServer:
    behind = settings.model_copy(update={"trusted_proxies": (PROXY_ADDRESS,)})
    return await aiohttp_server(create_app(behind), host="127.0.0.1")


@pytest.fixture
def nginx(app_server: TestServer, tmp_path: Path) -> Iterator[Nginx]:
    assert app_server.port is not None
    with tls_proxy(tmp_path / "nginx", app_server.port) as proxy:
        yield proxy


@asynccontextmanager
async def browser(nginx: Nginx, source: str) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTPS client of the site, connecting from ``source``, keeping cookies as a browser."""
    connector = aiohttp.TCPConnector(ssl=nginx.client_tls, local_addr=(source, 0))
    jar = aiohttp.CookieJar(unsafe=True)  # the site is an IP address
    async with aiohttp.ClientSession(nginx.url, connector=connector, cookie_jar=jar) as session:
        yield session


async def sign_in(
    client: aiohttp.ClientSession, nginx: Nginx, token: str, headers: dict[str, str] | None = None
) -> aiohttp.ClientResponse:
    return await client.post(
        "/dashboard/sign-in",
        data={"token": token, "next": "/dashboard"},
        headers={"Origin": nginx.url, **(headers or {})},
        allow_redirects=False,
    )


async def test_sign_in_and_retry_a_failed_job_through_nginx(
    nginx: Nginx, redis: ArqRedis, settings: Settings, run_worker: RunWorker
) -> None:
    job_id = await enqueue(redis, "process_image", {"upload": "missing.jpg"})
    await run_worker()  # fails for good: there is no such upload
    async with browser(nginx, ANN) as ann:
        page = await ann.get("/dashboard/sign-in")
        assert page.status == 200

        signed_in = await sign_in(ann, nginx, TEST_API_TOKEN)
        assert signed_in.status == 303, await signed_in.text()
        assert page.headers["Strict-Transport-Security"] == "max-age=31536000"
        assert signed_in.headers["Location"] == "/dashboard"
        cookie = signed_in.cookies["jobsvc_session"]
        assert cookie["secure"] is True
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "Strict"

        overview = await ann.get("/dashboard")
        text = await overview.text()
        assert overview.status == 200, text
        assert f"/dashboard/jobs/{job_id}/retry" in text
        found = CSRF_META.search(text)
        assert found is not None
        retried = await ann.post(
            f"/dashboard/jobs/{job_id}/retry",
            data={"csrf_token": found.group(1)},
            headers={"Origin": nginx.url},
            allow_redirects=False,
        )
        assert retried.status == 303, await retried.text()
        assert retried.headers["Location"] == f"/dashboard/jobs/{job_id}"
        assert retried.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert await queued(redis, settings) == [job_id]


async def test_the_sign_in_limit_counts_each_client_behind_nginx(
    nginx: Nginx, redis: ArqRedis
) -> None:
    async with browser(nginx, ANN) as ann, browser(nginx, BOB) as bob:
        for _ in range(SIGN_IN_BUDGET):
            wrong = await sign_in(bob, nginx, "wrong-token-0123456789")
            assert wrong.status == 403
            assert "not valid" in await wrong.text()
        # Bob naming Ann's address himself: nginx adds the one it saw, and that one counts
        posing = await sign_in(bob, nginx, TEST_API_TOKEN, {"X-Forwarded-For": ANN})
        assert posing.status == 429
        assert "Retry-After" in posing.headers
        assert (await sign_in(ann, nginx, TEST_API_TOKEN)).status == 303, "Ann has her own"
