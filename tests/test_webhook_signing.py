"""Signed webhooks (Standard Webhooks): real deliveries to a loopback receiver, checked with
the standardwebhooks library's own verifier, across a retry and a key rotation."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer
from standardwebhooks import Webhook, WebhookVerificationError

from settings import Settings, SettingsError, load_settings
from tests.conftest import RunWorker, status_of
from tests.webhook_targets import queue_webhook

NEW_KEY = "whsec_" + base64.b64encode(b"n" * 32).decode()
OLD_KEY = "whsec_" + base64.b64encode(b"o" * 24).decode()
OTHER_KEY = "whsec_" + base64.b64encode(b"x" * 32).decode()
PAYLOAD = {"event": "order.paid", "order": {"id": 42, "note": "café ✓"}}


@dataclass
class Receiver:
    """Keeps each request's raw body and headers; answers ``statuses`` in turn, then 200."""

    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((await request.read(), dict(request.headers)))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


async def serve(aiohttp_server: AiohttpServer, receiver: Receiver) -> str:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app)
    return str(server.make_url("/hook"))


def signing(settings: Settings, *keys: str) -> Settings:
    return settings.model_copy(
        update={"webhook_signing_secret": tuple(SecretStr(key) for key in keys)}
    )


async def test_deliveries_verify_with_either_key_of_a_rotation_across_a_retry(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    aiohttp_server: AiohttpServer,
) -> None:
    receiver = Receiver(statuses=[500])
    task_id = await queue_webhook(client, await serve(aiohttp_server, receiver), PAYLOAD)

    await run_worker(signing(settings, NEW_KEY, OLD_KEY))

    assert (await status_of(client, task_id))["status"] == "SUCCESS"
    assert len(receiver.requests) == 2, "the 500 is retried"
    for body, headers in receiver.requests:
        assert headers["webhook-id"] == task_id, "the same id on every attempt: the job id"
        assert len(headers["webhook-signature"].split(" ")) == 2, "one signature per key"
        # a receiver that holds only the new key, or only the old one, accepts it
        assert Webhook(NEW_KEY).verify(body, headers) == PAYLOAD
        assert Webhook(OLD_KEY).verify(body, headers) == PAYLOAD
        with pytest.raises(WebhookVerificationError):
            Webhook(OTHER_KEY).verify(body, headers)


async def test_a_tampered_body_or_id_is_refused(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    aiohttp_server: AiohttpServer,
) -> None:
    receiver = Receiver()
    await queue_webhook(client, await serve(aiohttp_server, receiver), PAYLOAD)

    await run_worker(signing(settings, NEW_KEY))

    [(body, headers)] = receiver.requests
    assert Webhook(NEW_KEY).verify(body, headers) == PAYLOAD
    assert headers["webhook-signature"].startswith("v1,")
    tampered = body.replace(b"42", b"43")
    assert tampered != body
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(NEW_KEY).verify(tampered, headers)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(NEW_KEY).verify(body, {**headers, "webhook-id": "another-job"})


async def test_without_a_secret_webhooks_go_unsigned(
    client: TestClient[Any, Any], run_worker: RunWorker, aiohttp_server: AiohttpServer
) -> None:
    receiver = Receiver()
    task_id = await queue_webhook(client, await serve(aiohttp_server, receiver), PAYLOAD)

    await run_worker()

    [(body, headers)] = receiver.requests
    assert headers["Idempotency-Key"] == task_id
    assert headers["Content-Type"] == "application/json"
    assert not [name for name in headers if name.lower().startswith("webhook-")]
    with pytest.raises(WebhookVerificationError, match="Missing required headers"):
        Webhook(NEW_KEY).verify(body, headers)


@pytest.mark.parametrize(
    "value",
    [
        "not-a-whsec-key",  # no prefix
        "whsec_not*base64!",  # the library would silently skip the bad characters
        "whsec_" + base64.b64encode(b"short").decode(),  # 5 bytes: too short
        f"{NEW_KEY},{OLD_KEY},{OTHER_KEY}",  # three
        f"{NEW_KEY},whsec_",  # the second one empty
    ],
)
def test_a_bad_secret_stops_start_up_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("WEBHOOK_SIGNING_SECRET", value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "WEBHOOK_SIGNING_SECRET" in message
    for part in value.split(","):
        if secret := part.removeprefix("whsec_"):
            assert secret not in message, "a secret is never quoted back"


def test_two_keys_are_read_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SIGNING_SECRET", f" {NEW_KEY} , {OLD_KEY} ")
    secrets = load_settings().webhook_signing_secret
    assert [secret.get_secret_value() for secret in secrets] == [NEW_KEY, OLD_KEY]
    assert NEW_KEY not in repr(load_settings())


@pytest.mark.parametrize(
    "command",
    [[sys.executable, "-m", "web"], [sys.executable, "-m", "arq", "service.WorkerSettings"]],
    ids=["web", "worker"],
)
def test_neither_process_starts_with_a_bad_secret(tmp_path: Path, command: list[str]) -> None:
    env = {
        **os.environ,
        "WEBHOOK_SIGNING_SECRET": "whsec_tooshort",
        "API_TOKENS": "a-token-long-enough-0123",
        "DATA_DIR": str(tmp_path),
    }
    done = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode != 0
    assert "WEBHOOK_SIGNING_SECRET" in done.stderr
    assert "the key must be 24 to 64 bytes" in done.stderr
    assert "tooshort" not in done.stderr
