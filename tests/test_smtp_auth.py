"""SMTP_USERNAME / SMTP_PASSWORD: the worker logs in, only over TLS unless allowed in clear;
refused credentials, and a server offering no TLS, fail without retrying."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp.test_utils import TestClient
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from settings import Settings
from tests.conftest import RunWorker, SmtpRecorder, free_port, status_of

# The test servers accept AUTH over plain TCP, so that a client sending it there is caught
# doing so; aiosmtpd warns about exactly that.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

EMAIL = {"to": "ann@example.com", "subject": "Hi", "body": "x"}


@dataclass
class Logins:
    """What the server's authenticator saw: each login's password and whether TLS was on."""

    seen: list[tuple[bytes, bool]] = field(default_factory=list)

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.seen.append((auth_data.password, session.ssl is not None))
        ok = (auth_data.login, auth_data.password) == (b"app", b"secret")
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 235 / 535


@dataclass
class AuthServer:
    recorder: SmtpRecorder
    logins: Logins


@pytest.fixture
def server_cert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """The server's TLS context: a certificate for 127.0.0.1 from a throw-away CA (trustme)
    that the worker's default context trusts (SSL_CERT_FILE, which it loads)."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
async def auth_server() -> AsyncIterator[Callable[..., Any]]:
    """Start an aiosmtpd server needing a login, with STARTTLS when given a TLS context."""
    controllers: list[Controller] = []

    async def start(tls: ssl.SSLContext | None = None) -> AuthServer:
        served = AuthServer(SmtpRecorder(port=free_port()), Logins())
        controller = Controller(
            served.recorder,
            hostname="127.0.0.1",
            port=served.recorder.port,
            authenticator=served.logins,
            auth_required=True,
            auth_require_tls=False,  # the server would take it in clear: the client must not
            tls_context=tls,
            require_starttls=False,
        )
        await asyncio.to_thread(controller.start)  # starts a thread and waits for it
        controllers.append(controller)
        return served

    yield start
    for controller in controllers:
        await asyncio.to_thread(controller.stop)


def login_settings(settings: Settings, server: AuthServer, **more: Any) -> Settings:
    update = {"smtp_port": server.recorder.port, "smtp_username": "app", "smtp_password": "secret"}
    return settings.model_copy(update={**update, **more})


async def test_the_password_travels_only_after_starttls_when_the_server_offers_it(
    auth_server: Callable[..., Any],  # first: stopped after the worker has closed
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    server_cert: ssl.SSLContext,
) -> None:
    """SMTP_STARTTLS is not set: the login still waits for TLS, since the server offers it."""
    server: AuthServer = await auth_server(server_cert)
    task_id = (await (await client.post("/send-email", json=EMAIL)).json())["task_id"]

    await run_worker(login_settings(settings, server))

    assert (await status_of(client, task_id))["status"] == "SUCCESS"
    assert server.logins.seen == [(b"secret", True)], "one login, and only over TLS"
    assert [m.recipients for m in server.recorder.messages] == [["ann@example.com"]]


async def test_a_server_without_starttls_gets_no_password_and_the_job_fails_for_good(
    auth_server: Callable[..., Any],  # first: stopped after the worker has closed
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
) -> None:
    server: AuthServer = await auth_server()
    task_id = (await (await client.post("/send-email", json=EMAIL)).json())["task_id"]

    await run_worker(login_settings(settings, server))

    status = await status_of(client, task_id)
    assert status["status"] == "FAILURE"
    assert status["attempts"] == 1, "the same server will not offer TLS on a retry"
    assert "without TLS" in status["error"]
    assert "SMTP_ALLOW_PLAINTEXT_AUTH" in status["error"]
    assert server.logins.seen == [], "no AUTH command, so no password, left the worker"
    assert server.recorder.messages == []
    failed = await (await client.get("/jobs/failed")).json()
    assert [job["task_id"] for job in failed["jobs"]] == [task_id]


@pytest.mark.parametrize(
    ("password", "delivered"), [("secret", True), ("wrong", False)], ids=["right", "wrong"]
)
async def test_a_login_in_clear_when_explicitly_allowed(
    auth_server: Callable[..., Any],  # first: stopped after the worker has closed
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    password: str,
    delivered: bool,
) -> None:
    server: AuthServer = await auth_server()
    task_id = (await (await client.post("/send-email", json=EMAIL)).json())["task_id"]

    allowed = login_settings(
        settings, server, smtp_password=password, smtp_allow_plaintext_auth=True
    )
    await run_worker(allowed)

    status = await status_of(client, task_id)
    assert set(server.logins.seen) == {(password.encode(), False)}  # PLAIN, then LOGIN
    if delivered:
        assert status["status"] == "SUCCESS"
        assert [m.recipients for m in server.recorder.messages] == [["ann@example.com"]]
    else:
        assert status["status"] == "FAILURE"
        assert status["attempts"] == 1, "bad credentials will not get better by retrying"
        assert "535" in status["error"]
        assert server.recorder.messages == []


async def test_even_when_allowed_in_clear_the_login_takes_tls_when_offered(
    auth_server: Callable[..., Any],  # first: stopped after the worker has closed
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    server_cert: ssl.SSLContext,
) -> None:
    server: AuthServer = await auth_server(server_cert)
    task_id = (await (await client.post("/send-email", json=EMAIL)).json())["task_id"]
    await run_worker(login_settings(settings, server, smtp_allow_plaintext_auth=True))
    assert (await status_of(client, task_id))["status"] == "SUCCESS"
    assert server.logins.seen == [(b"secret", True)]
