"""A browser-like client of the dashboard for HTTP-level tests: cookies, Origin, CSRF token."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from tests.conftest import TEST_API_TOKEN

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


@dataclass
class Dashboard:
    client: TestClient[Any, Any]
    csrf: str = ""

    @property
    def origin(self) -> str:
        return str(self.client.make_url("/").origin())

    async def page(self, path: str, status: int = 200) -> str:
        response = await self.client.get(path, headers={"Accept": "text/html"})
        text = await response.text()
        assert response.status == status, text
        if found := CSRF_META.search(text):
            self.csrf = found.group(1)
        return text

    async def post(
        self,
        path: str,
        data: dict[str, str] | None = None,
        *,
        csrf: bool = True,
        headers: dict[str, str] | None = None,
    ) -> ClientResponse:
        form = dict(data or {})
        if csrf:
            form["csrf_token"] = self.csrf
        response: ClientResponse = await self.client.post(
            path,
            data=form,
            headers={"Origin": self.origin, **(headers or {})},
            allow_redirects=False,
        )
        return response

    async def sign_in(self, token: str = TEST_API_TOKEN) -> ClientResponse:
        response = await self.post(
            "/dashboard/sign-in", {"token": token, "next": "/dashboard"}, csrf=False
        )
        if response.status == 303:
            await self.page("/dashboard")
        return response

    async def sign_in_from(
        self, origin: str, headers: dict[str, str], token: str = TEST_API_TOKEN
    ) -> ClientResponse:
        """Sign in with ``Origin: origin`` and extra ``headers`` (a proxy's, say)."""
        return await self.post(
            "/dashboard/sign-in",
            {"token": token, "next": "/dashboard"},
            csrf=False,
            headers={"Origin": origin, **headers},
        )
