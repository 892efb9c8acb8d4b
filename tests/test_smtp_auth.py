"""SMTP_USERNAME / SMTP_PASSWORD: the worker logs in; refused credentials fail without retrying."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from settings import Settings
from tests.conftest import RunWorker, SmtpRecorder, free_port, status_of

# The test server allows AUTH over plain TCP on loopback; aiosmtpd warns about exactly that.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

EMAIL = {"to": "ann@example.com", "subject": "Hi", "body": "x"}


def accept_only_app_secret(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"app",
        b"secret",
    )
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 235 / 535


@pytest.fixture
def auth_server() -> Iterator[SmtpRecorder]:
    recorder = SmtpRecorder()
    recorder.port = free_port()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=recorder.port,
        authenticator=accept_only_app_secret,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield recorder
    finally:
        controller.stop()


@pytest.mark.parametrize(
    ("password", "delivered"), [("secret", True), ("wrong", False)], ids=["right", "wrong"]
)
async def test_worker_logs_in_with_the_configured_credentials(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    auth_server: SmtpRecorder,
    password: str,
    delivered: bool,
) -> None:
    login = settings.model_copy(
        update={"smtp_port": auth_server.port, "smtp_username": "app", "smtp_password": password}
    )
    task_id = (await (await client.post("/send-email", json=EMAIL)).json())["task_id"]

    await run_worker(login)

    status = await status_of(client, task_id)
    if delivered:
        assert status["status"] == "SUCCESS"
        assert [m.recipients for m in auth_server.messages] == [["ann@example.com"]]
    else:
        assert status["status"] == "FAILURE"
        assert status["attempts"] == 1, "bad credentials will not get better by retrying"
        assert "535" in status["error"]
        assert auth_server.messages == []
