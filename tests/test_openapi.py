"""GET /openapi.json describes every route, and the live app behaves as described.

schemathesis generates requests from the description (valid and invalid bodies, odd ids,
missing tokens), sends them to a real ``python -m web`` process, and checks every answer:
no 5xx, only documented status codes, content types, headers and body schemas.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from schemathesis import GenerationMode

from settings import Settings
from tests import conftest
from tests.conftest import AUTH_HEADERS, TEST_API_TOKEN, ClientFactory, free_port
from tests.processes import ServiceProcess
from tests.test_worker_process import service_env
from web import create_app
from web.openapi import OPERATIONS, routes_of

# per operation and mode: seconds for the whole run, not minutes; OPENAPI_EXAMPLES=500 to hunt
MAX_EXAMPLES = int(os.environ.get("OPENAPI_EXAMPLES", "15"))


async def test_every_route_is_described_and_every_description_is_a_route(
    aiohttp_client: ClientFactory, settings: Settings
) -> None:
    app = create_app(settings)
    client = await aiohttp_client(app)  # no token: the description is public
    response = await client.get("/openapi.json")
    assert response.status == 200
    spec = await response.json()
    described = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    served = routes_of(app)
    assert served - described == set(), "routes missing from web/openapi.py OPERATIONS"
    assert set(OPERATIONS) - served == set(), "OPERATIONS entries for routes that do not exist"
    # routes that honour Idempotency-Key say so (the header, its 200 replay, 409 and 422);
    # functools.wraps hides the wrapper's name, its code object still has it
    wrapped = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and getattr(route.handler, "__code__", None) is not None
        and route.handler.__code__.co_qualname.startswith("idempotent.")
    }
    assert wrapped == {key for key, operation in OPERATIONS.items() if operation.idempotent}


async def test_request_bodies_come_from_the_pydantic_models(client: TestClient[Any, Any]) -> None:
    spec = await (await client.get("/openapi.json")).json()
    send = spec["paths"]["/send-email"]["post"]
    ref = send["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    model = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert model["required"] == ["to", "subject", "body"]
    assert model["additionalProperties"] is False
    assert model["properties"]["subject"]["maxLength"] == 200
    # public routes say so; the others inherit the bearer requirement and its answers
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert "security" not in send
    assert {"401", "403", "429", "503"} <= set(send["responses"])


@pytest.fixture(scope="module")
def live_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m web`` on a free loopback port, for the whole module."""
    data: Path = tmp_path_factory.mktemp("openapi")
    own = Settings(redis_url=conftest.TEST_REDIS_URL, data_dir=data, api_tokens=(TEST_API_TOKEN,))
    port = free_port()
    env = service_env(own, WEB_PORT=str(port), API_TOKENS=TEST_API_TOKEN, LOG_LEVEL="WARNING")
    process = ServiceProcess(["-m", "web"], env, data / "web.log")
    url = f"http://127.0.0.1:{port}"
    try:
        # the loader retries until the app answers, within this many seconds
        schemathesis.openapi.from_url(f"{url}/openapi.json", wait_for_schema=30)
        yield url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def live_schema(live_web: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_web}/openapi.json", config=CONFIG)


# The sign-in page's one input, ``next``, is any string (a foreign one falls back to the
# dashboard), so there is no bad data to send it.
ANY_INPUT_GOES = {("GET", "/dashboard/sign-in")}


# An endless stream (it ends when the viewer leaves): nothing for a request-response check.
ENDLESS = {("GET", "/dashboard/events")}


def _cases() -> list[tuple[str, str, GenerationMode]]:
    """Every operation with data that follows its schema (it must get a documented answer),
    and those that take input with data that breaks it (it must be refused with a 4xx)."""
    cases = []
    for (method, path), operation in sorted(OPERATIONS.items()):
        if (method, path) in ENDLESS:
            continue
        cases.append((method, path, GenerationMode.POSITIVE))
        takes_input = (
            operation.body
            or operation.job
            or operation.any_job
            or operation.multipart
            or operation.form
            or operation.query
        )
        if (takes_input or "{" in path) and (method, path) not in ANY_INPUT_GOES:
            cases.append((method, path, GenerationMode.NEGATIVE))
    return cases


# Every built-in check runs, but positive_data_acceptance (every schema-valid body accepted):
# JSON Schema cannot say "an address email_validator takes" or "no control characters after
# stripping", which the pydantic validators enforce with documented 400s. Bad data may be
# refused with any documented 4xx (a 413 for a huge body, a 415 for a non-image), and query
# strings may carry parameters the API ignores, as HTTP APIs do.
CONFIG = schemathesis.Config.from_str("""
[generation]
allow-extra-parameters = false

[checks.positive_data_acceptance]
enabled = false

[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 406, 411, 413, 415, 422, 429]
""")


@pytest.mark.parametrize(("method", "path", "mode"), _cases())
def test_the_live_app_behaves_as_described(
    live_schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = live_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None)
    def behaves(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(headers=AUTH_HEADERS, timeout=10)

    behaves()


def test_live_description_is_served_without_a_token(live_web: str) -> None:
    with urllib.request.urlopen(f"{live_web}/openapi.json", timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("application/json")


async def test_a_static_file_name_too_long_for_the_os_is_404_not_500(
    client: TestClient[Any, Any],
) -> None:
    """Found by the schemathesis run: aiohttp's static handler let ENAMETOOLONG out as a 500."""
    response = await client.get("/dashboard/static/" + "a" * 300)
    assert response.status == 404
    assert (await response.json()) == {"error": "Not Found"}
