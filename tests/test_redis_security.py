"""REDIS_URL with a password, an ACL user and TLS (rediss://), against a private redis-server.

The server is the test's own (free port, loopback, nothing saved): it requires a password,
knows one ACL user, and listens with TLS (client certificates required) on a second port.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis as redis_py
import trustme
from redis.asyncio import Redis

from service.dev.launcher import redis_answers
from service.store.redis import connection_options
from settings import Settings
from tests.conftest import (
    AUTH_HEADERS,
    ClientFactory,
    RunWorker,
    SmtpRecorder,
    free_port,
    ping_answered,
)
from web import create_app

PASSWORD = "p@ss:w/rd %41 é"  # every character a URL would have to escape
ACL_USER, ACL_PASSWORD = "jobs", "jobs-secret"


@dataclass
class SecureRedis:
    port: int
    tls_port: int | None
    ca_file: Path
    cert_file: Path
    key_file: Path

    def url(self, scheme: str = "redis", user: str = "", password: str = PASSWORD) -> str:
        port = self.tls_port if scheme == "rediss" else self.port
        return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{port}/0"


def _answers(**kwargs: Any) -> bool:
    return ping_answered(redis_py.Redis(host="127.0.0.1", socket_connect_timeout=0.5, **kwargs))


@pytest.fixture(scope="module")
def secure_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    folder = tmp_path_factory.mktemp("secure-redis")
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("jobservice-client")
    files = {name: folder / f"{name}.pem" for name in ("ca", "server", "client", "client-key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(files["server"]))
    client_cert.cert_chain_pems[0].write_to_path(str(files["client"]))
    client_cert.private_key_pem.write_to_path(str(files["client-key"]))

    port, tls_port = free_port(), free_port()
    plain = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1", "::1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(folder),
        "--requirepass", PASSWORD,
        "--user", ACL_USER, "on", f">{ACL_PASSWORD}", "~*", "&*", "+@all",
    ]  # fmt: skip
    tls = [
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(files["server"]),
        "--tls-key-file", str(files["server"]),
        "--tls-ca-cert-file", str(files["ca"]),
        "--tls-auth-clients", "yes",
    ]  # fmt: skip
    process = _start(plain + tls, port)
    if process is None:  # a redis-server built without TLS refuses the tls-* options
        tls_port = 0
        process = _start(plain, port)
    assert process is not None, "the private redis-server did not start"
    try:
        yield SecureRedis(port, tls_port or None, files["ca"], files["client"], files["client-key"])
    finally:
        process.kill()
        process.wait()


def _start(args: list[str], port: int) -> subprocess.Popen[bytes] | None:
    """Start redis-server; None when it exits instead of answering."""
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _answers(port=port, password=PASSWORD):
        if process.poll() is not None:
            return None
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            return None
        time.sleep(0.05)
    return process


def needs_tls(secure: SecureRedis) -> None:
    if secure.tls_port is None:
        pytest.skip("this redis-server is built without TLS")


def tls_settings(settings: Settings, secure: SecureRedis, **overrides: Any) -> Settings:
    update: dict[str, Any] = {
        "redis_url": secure.url("rediss"),
        "redis_tls_ca_file": secure.ca_file,
        "redis_tls_cert_file": secure.cert_file,
        "redis_tls_key_file": secure.key_file,
    }
    update.update(overrides)
    return settings.model_copy(update=update)


def client_from(settings: Settings) -> Redis:
    """A plain client with exactly the connection options the service derives from settings."""
    return Redis(**connection_options(settings.redis_settings), socket_connect_timeout=2)


async def pings(settings: Settings) -> bool:
    client = client_from(settings)
    try:
        return bool(await client.ping())
    except (redis_py.RedisError, OSError):
        return False
    finally:
        await client.aclose()


@pytest.fixture
async def flushed(secure_redis: SecureRedis) -> SecureRedis:
    client = Redis(host="127.0.0.1", port=secure_redis.port, password=PASSWORD)
    await client.flushdb()
    await client.aclose()
    return secure_redis


async def assert_email_goes_through(
    aiohttp_client: ClientFactory,
    own: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    """API -> Redis (rate limit + queue) -> worker -> SMTP -> status, all over ``own``'s Redis."""
    client = await aiohttp_client(create_app(own), headers=AUTH_HEADERS)
    response = await client.post(
        "/send-email", json={"to": "ann@example.com", "subject": "Hi", "body": "x"}
    )
    assert response.status == 202, await response.text()
    task_id = (await response.json())["task_id"]
    await run_worker(own)
    status = await (await client.get(f"/task-status/{task_id}")).json()
    assert status["status"] == "SUCCESS", status
    assert [mail.recipients for mail in smtp_server.messages] == [["ann@example.com"]]
    health = await (await client.get("/health")).json()
    assert health["redis"] == "ok"


async def test_a_password_with_escaped_characters_works_end_to_end(
    aiohttp_client: ClientFactory,
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
    flushed: SecureRedis,
) -> None:
    own = settings.model_copy(update={"redis_url": flushed.url()})
    assert own.redis_settings.password == PASSWORD
    await assert_email_goes_through(aiohttp_client, own, run_worker, smtp_server)


async def test_an_acl_user_works_end_to_end(
    aiohttp_client: ClientFactory,
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
    flushed: SecureRedis,
) -> None:
    own = settings.model_copy(
        update={"redis_url": flushed.url(user=ACL_USER, password=ACL_PASSWORD)}
    )
    await assert_email_goes_through(aiohttp_client, own, run_worker, smtp_server)


async def test_wrong_or_missing_credentials_are_refused(
    settings: Settings, flushed: SecureRedis
) -> None:
    good = settings.model_copy(update={"redis_url": flushed.url()})
    assert await pings(good), "control: the right password gets in"
    for url in [
        flushed.url(password="wrong"),
        f"redis://127.0.0.1:{flushed.port}/0",
        flushed.url(user=ACL_USER, password=PASSWORD),
    ]:
        assert not await pings(settings.model_copy(update={"redis_url": url})), url


async def test_tls_with_a_client_certificate_works_end_to_end(
    aiohttp_client: ClientFactory,
    settings: Settings,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
    flushed: SecureRedis,
) -> None:
    needs_tls(flushed)
    own = tls_settings(settings, flushed)
    assert own.redis_settings.ssl
    assert own.redis_settings.ssl_check_hostname
    await assert_email_goes_through(aiohttp_client, own, run_worker, smtp_server)


async def test_tls_refuses_an_untrusted_server_and_goes_without_a_client_certificate(
    settings: Settings, flushed: SecureRedis
) -> None:
    needs_tls(flushed)
    assert await pings(tls_settings(settings, flushed)), "control: the full set connects"
    # the system CAs do not know the test CA: the server's certificate is not trusted
    assert not await pings(tls_settings(settings, flushed, redis_tls_ca_file=None))
    # the server requires a client certificate
    assert not await pings(
        tls_settings(settings, flushed, redis_tls_cert_file=None, redis_tls_key_file=None)
    )
    # plain TCP to the TLS port does not get in either
    plain = settings.model_copy(
        update={"redis_url": flushed.url("rediss").replace("rediss://", "redis://")}
    )
    assert not await pings(plain)


async def test_tls_checks_the_host_name(settings: Settings, flushed: SecureRedis) -> None:
    """The server's certificate names 127.0.0.1 and localhost, not ::1: over ::1 it is refused."""
    needs_tls(flushed)
    plain_v6 = flushed.url().replace("127.0.0.1", "[::1]")
    if not await pings(settings.model_copy(update={"redis_url": plain_v6})):
        pytest.skip("no IPv6 loopback here")
    by_name = flushed.url("rediss").replace("127.0.0.1", "localhost")
    assert await pings(tls_settings(settings, flushed, redis_url=by_name)), "control"
    by_v6 = flushed.url("rediss").replace("127.0.0.1", "[::1]")
    assert not await pings(tls_settings(settings, flushed, redis_url=by_v6))


async def test_the_server_answers_nothing_without_auth(flushed: SecureRedis) -> None:
    """Guards the tests above: the private server really requires the password."""
    client = Redis(host="127.0.0.1", port=flushed.port)
    with pytest.raises(redis_py.AuthenticationError):
        await client.ping()
    await client.aclose()


async def test_make_dev_sees_a_tls_redis_with_the_same_settings(
    settings: Settings, flushed: SecureRedis
) -> None:
    """`make dev` must not start a second Redis because it could not reach a TLS one."""
    needs_tls(flushed)
    assert await asyncio.to_thread(redis_answers, tls_settings(settings, flushed))
    password_only = settings.model_copy(update={"redis_url": flushed.url()})
    assert await asyncio.to_thread(redis_answers, password_only)
    untrusted = tls_settings(settings, flushed, redis_tls_ca_file=None)
    assert not await asyncio.to_thread(redis_answers, untrusted)
