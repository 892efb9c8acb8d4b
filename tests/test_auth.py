"""API tokens: every route but the public allow-list refuses a missing (401) or wrong (403) token.

The protected routes are read from the app's own router, so a route added later is covered here
without anyone remembering to add it.
"""

from __future__ import annotations

import re
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, make_mocked_request
from arq.connections import ArqRedis

from service.dev.launcher import dev_token
from service.store.database import open_database
from settings import Settings
from tests import files
from tests.conftest import AUTH_HEADERS, TEST_API_TOKEN, ClientFactory, queued
from tests.days import RECENT_DAY
from tests.images import image_bytes
from tests.test_worker_process import ROOT, service_env
from web import create_app
from web.auth import is_public, matching_token

_PROBE_APP = create_app(Settings(api_tokens=(TEST_API_TOKEN,)))


def _probe_path(resource: web.AbstractResource) -> str:
    path = resource.canonical
    if isinstance(resource, web.StaticResource):
        return path.rstrip("/") + "/probe.txt"
    return re.sub(r"\{[^}]*\}", "0123456789abcdef", path)


def protected_routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, path) for every route of ``app`` that is not on the public allow-list."""
    found = set()
    for route in app.router.routes():
        method = "GET" if route.method in {"HEAD", "*"} else route.method
        path = _probe_path(route.resource) if route.resource else ""
        if path and not is_public(method, path):
            found.add((method, path))
    return sorted(found)


PROTECTED = protected_routes(_PROBE_APP)

# A request each protected route would accept with a token: the refusal is about the token alone.
VALID_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/send-email"): {"json": {"to": "a@example.com", "subject": "Hi", "body": "x"}},
    ("POST", "/register"): {"json": {"name": "Ann", "email": "ann@example.com"}},
    ("POST", "/events"): {"json": {"event": {"type": "signup"}}},
    ("POST", "/webhooks"): {"json": {"url": "https://example.com/h", "payload": {"a": 1}}},
    ("POST", "/reports/daily"): {"json": {"day": RECENT_DAY}},
}


def _request_kwargs(method: str, path: str) -> dict[str, Any]:
    if (method, path) == ("POST", "/upload"):
        form = FormData()
        form.add_field("file", image_bytes((40, 30)), filename="a.jpg", content_type="image/jpeg")
        return {"data": form}
    return dict(VALID_BODIES.get((method, path), {}))


@pytest.fixture
async def anonymous(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> TestClient[Any, Any]:
    """A client of the app that sends no token unless a test adds one."""
    return await aiohttp_client(create_app(settings))


async def assert_nothing_changed(redis: ArqRedis, settings: Settings) -> None:
    assert await queued(redis, settings) == []
    assert await redis.dbsize() == 0, await redis.keys("*")
    assert await files.names_in(settings.uploads_dir) == []
    db = await open_database(settings)
    try:
        assert await db.get_user(1) is None
    finally:
        await db.close()


def test_the_router_lists_every_known_route_as_protected() -> None:
    """Guards the parametrization below: an empty or partial list would test nothing."""
    for known in [
        ("POST", "/send-email"),
        ("GET", "/task-status/0123456789abcdef"),
        ("POST", "/upload"),
        ("POST", "/register"),
        ("POST", "/events"),
        ("POST", "/webhooks"),
        ("POST", "/reports/daily"),
    ]:
        assert known in PROTECTED
    assert ("GET", "/health") not in PROTECTED


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_the_probe_path_reaches_the_route_it_stands_for(method: str, path: str) -> None:
    match = await _PROBE_APP.router.resolve(make_mocked_request(method, path))
    assert match.http_exception is None, f"{method} {path} does not resolve to a route"


@pytest.mark.parametrize(
    ("method", "path", "authorization"),
    [(method, path, None) for method, path in PROTECTED]
    + [
        ("POST", "/events", header)
        for header in [
            "",
            "Bearer",
            "Bearer ",
            f"Basic {TEST_API_TOKEN}",
            TEST_API_TOKEN,
            # a valid token with spaces around it is malformed, not trimmed into a match
            f"Bearer  {TEST_API_TOKEN}",
            f"Bearer \t{TEST_API_TOKEN}",
        ]
    ],
)
async def test_a_missing_token_is_401_and_changes_nothing(
    anonymous: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    method: str,
    path: str,
    authorization: str | None,
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await anonymous.request(
        method, path, headers=headers, **_request_kwargs(method, path)
    )
    assert response.status == 401, await response.text()
    assert response.content_type == "application/json"
    assert "API token is required" in (await response.json())["error"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    await assert_nothing_changed(redis, settings)


@pytest.mark.parametrize(
    ("method", "path", "token"),
    [(method, path, "wrong-token-0123456789abcdef") for method, path in PROTECTED]
    + [
        ("POST", "/events", token)
        for token in [TEST_API_TOKEN[:-1], TEST_API_TOKEN + "x", "x", TEST_API_TOKEN.upper()]
    ],
)
async def test_a_wrong_token_is_403_and_changes_nothing(
    anonymous: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    method: str,
    path: str,
    token: str,
) -> None:
    response = await anonymous.request(
        method,
        path,
        headers={"Authorization": f"Bearer {token}"},
        **_request_kwargs(method, path),
    )
    assert response.status == 403, await response.text()
    assert response.content_type == "application/json"
    assert (await response.json()) == {"error": "the API token is not valid"}
    await assert_nothing_changed(redis, settings)


async def test_a_valid_token_gets_in_whatever_the_scheme_case(
    anonymous: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    for scheme in ["Bearer", "bearer", "BEARER"]:
        response = await anonymous.post(
            "/events",
            json={"event": {"type": "signup"}},
            headers={"Authorization": f"{scheme} {TEST_API_TOKEN}"},
        )
        assert response.status == 202, await response.text()
    assert len(await queued(redis, settings)) == 3


async def test_every_configured_token_is_accepted(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    tokens = ("first-token-0123456789", "second-token-0123456789")
    client = await aiohttp_client(create_app(settings.model_copy(update={"api_tokens": tokens})))
    for token in tokens:
        response = await client.get(
            "/task-status/unknown", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status == 404, await response.text()
    response = await client.get("/task-status/unknown", headers=AUTH_HEADERS)
    assert response.status == 403


async def test_with_no_tokens_configured_every_protected_route_refuses(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    client = await aiohttp_client(create_app(settings.model_copy(update={"api_tokens": ()})))
    response = await client.post("/events", json={"event": {}}, headers=AUTH_HEADERS)
    assert response.status == 403
    assert (await client.post("/events", json={"event": {}})).status == 401
    assert (await client.get("/health")).status == 200
    await assert_nothing_changed(redis, settings)


async def test_public_routes_need_no_token(anonymous: TestClient[Any, Any]) -> None:
    assert (await anonymous.get("/health")).status == 200
    assert (await anonymous.head("/health")).status == 200
    # only the listed method is public
    assert (await anonymous.post("/health")).status == 401


async def test_unknown_paths_do_not_reveal_themselves_without_a_token(
    anonymous: TestClient[Any, Any],
) -> None:
    assert (await anonymous.get("/no-such-route")).status == 401
    assert (await anonymous.get("/no-such-route", headers=AUTH_HEADERS)).status == 404


def test_matching_token_finds_the_equal_token_only() -> None:
    tokens = ("a" * 20, "b" * 20)
    assert matching_token("b" * 20, tokens) == "b" * 20
    assert matching_token("b" * 19, tokens) is None
    assert matching_token("ü" * 20, tokens) is None
    assert matching_token("a" * 20, ()) is None


def test_api_tokens_is_a_comma_list_of_long_enough_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKENS", " first-token-0123456789 , second-token-0123456789 ,")
    assert Settings().api_tokens == ("first-token-0123456789", "second-token-0123456789")
    with pytest.raises(ValueError, match="at least 16"):
        Settings(api_tokens=("short",))
    with pytest.raises(ValueError, match="printable ASCII"):
        Settings(api_tokens=("token with\nnewline-0123",))


def test_web_refuses_to_start_without_tokens(settings: Settings) -> None:
    env = service_env(settings, API_TOKENS="")
    result = subprocess.run(
        [sys.executable, "-m", "web"], cwd=ROOT, env=env, capture_output=True, timeout=30
    )
    assert result.returncode != 0
    output = (result.stdout + result.stderr).decode()
    assert "API_TOKENS is empty" in output
    assert "Traceback" not in output


def test_make_dev_makes_a_private_token_once_and_prefers_api_tokens(tmp_path: Path) -> None:
    own = Settings(data_dir=tmp_path)
    token = dev_token(own)
    assert len(token) >= 32
    assert dev_token(own) == token, "the dev token must survive a restart"
    assert stat.S_IMODE((tmp_path / "dev-api-token").stat().st_mode) == 0o600
    Settings(api_tokens=(token,))  # a valid token by the settings' own rules
    chosen = Settings(data_dir=tmp_path, api_tokens=("set-by-operator-0123",))
    assert dev_token(chosen) == "set-by-operator-0123"


async def test_task_ids_are_random_uuid4s_not_guessable_counters(
    client: TestClient[Any, Any],
) -> None:
    """The token guards /task-status; the id itself must not be guessable from another one."""
    ids = []
    for _ in range(3):
        response = await client.post("/events", json={"event": {"type": "x"}})
        assert response.status == 202
        ids.append((await response.json())["task_id"])
    for task_id in ids:
        assert uuid.UUID(hex=task_id).version == 4
    assert len(set(ids)) == 3
