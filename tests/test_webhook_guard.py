"""SSRF attacks on the webhook job, and the address check that stops them.

End-to-end attacks go only to recording servers on loopback (each asserts the server saw
nothing); every other range is tested on the address check itself, with no connection made.
Tests never send traffic outside loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from jobs.webhook_guard import (
    GuardedResolver,
    TargetRefusedError,
    address_refusal,
    literal_address,
    url_refusal,
)
from service.queue.enqueue import enqueue
from service.worker.options import worker_options
from settings import Settings
from tests.conftest import AUTH_HEADERS, ClientFactory, RunWorker, free_port, queued, status_of
from web import create_app

MiB = 1024 * 1024
PAYLOAD = {"order": 42}


# --- the address check, no connection made -------------------------------------------------


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("169.254.0.1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "not a public address"),
        ("198.18.0.1", "not a public address"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fd12:3456::1", "unique-local"),
        ("fc00::1", "unique-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%2", "link-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
        ("::ffff:127.0.0.1", "IPv4-mapped"),
        ("::ffff:169.254.169.254", "IPv4-mapped"),
        ("::ffff:8.8.8.8", "IPv4-mapped"),
        ("::127.0.0.1", "IPv4-compatible"),
        ("64:ff9b::a9fe:a9fe", "NAT64"),
        ("2002:a9fe:a9fe::1", "6to4"),
        ("2001:0:4136:e378::1", "Teredo"),
        ("2001:db8::1", "not a public address"),
    ],
)
def test_non_public_addresses_are_refused_with_their_kind(address: str, why: str) -> None:
    reason = address_refusal(ipaddress.ip_address(address))
    assert reason is not None
    assert why in reason


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("example.com", None),
    ],
)
def test_odd_ip_literal_forms_are_read_as_resolvers_read_them(
    host: str, address: str | None
) -> None:
    expected = ipaddress.ip_address(address) if address else None
    assert literal_address(host) == expected


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/x", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", "http:// or https://"),
        ("http://localhost:6379/", "this machine"),
        ("http://LOCALHOST./", "this machine"),
        ("http://api.localhost/", "this machine"),
        ("http://127.0.0.1/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://0x7f000001/", "loopback"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "IPv4-mapped"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fd00::1]/", "unique-local"),
        ("http://100.64.0.1/", "carrier-grade NAT"),
        ("http://10.0.0.1/", "private"),
        ("http://8.8.8.8/", "an IP address"),
    ],
)
def test_url_refusal_names_why(url: str, reason: str) -> None:
    refusal = url_refusal(url, ())
    assert refusal is not None
    assert reason in refusal


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example.com/x", ()),
        ("http://127.0.0.1:8000/x", ("127.0.0.1",)),
        ("http://Internal.Example./x", ("internal.example",)),
        ("http://[::1]:81/x", ("[::1]",)),
        ("http://localhost/x", ("LOCALHOST",)),
    ],
)
def test_public_names_and_allow_listed_hosts_pass(url: str, allowed: tuple[str, ...]) -> None:
    assert url_refusal(url, allowed) is None


@pytest.mark.parametrize(
    ("url", "allowed", "opened"),
    [
        ("http://127.0.0.1:8000/x", "127.0.0.1:8000", True),
        ("http://127.0.0.1:8001/x", "127.0.0.1:8000", False),
        ("http://127.0.0.1/x", "127.0.0.1:8000", False),
        ("http://[::1]:81/x", "[::1]:81", True),
        ("http://[::1]:82/x", "[::1]:81", False),
        ("https://10.0.0.7/x", "10.0.0.7:443", True),  # the scheme's own port
        ("http://10.0.0.7/x", "10.0.0.7:443", False),
        ("http://[fd00::7]:9/x", "fd00::7", True),  # a bare IPv6 address: every port
        ("http://localhost:8443/x", "LOCALHOST:8443", True),
        ("http://localhost:8444/x", "localhost:8443", False),
    ],
)
def test_an_allowed_host_with_a_port_opens_that_port_only(
    url: str, allowed: str, opened: bool
) -> None:
    assert (url_refusal(url, (allowed,)) is None) is opened


@dataclass
class MapResolver(AbstractResolver):
    """A test DNS: fixed answers per name, and a count of the questions asked."""

    answers: dict[str, list[str]]
    asked: list[str] = field(default_factory=list)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(f"test resolver: no answer for {host}")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    "addresses",
    [
        ["10.0.0.7"],
        ["169.254.169.254"],
        ["100.64.3.2"],
        ["fd00::7"],
        ["ff05::2"],
        ["::ffff:10.0.0.7"],
        ["93.184.215.14", "10.0.0.7"],  # one private address among public ones
    ],
)
async def test_resolver_refuses_a_name_with_any_non_public_address(addresses: list[str]) -> None:
    guard = GuardedResolver((), inner=MapResolver({"evil.example": addresses}))
    with pytest.raises(TargetRefusedError, match=r"evil\.example resolves to"):
        await guard.resolve("evil.example", 80)


async def test_resolver_passes_public_answers_and_allow_listed_names() -> None:
    inner = MapResolver({"ok.example": ["93.184.215.14"], "intranet.example": ["10.0.0.7"]})
    guard = GuardedResolver(("intranet.example",), inner=inner)
    assert [r["host"] for r in await guard.resolve("ok.example", 443)] == ["93.184.215.14"]
    assert [r["host"] for r in await guard.resolve("intranet.example", 80)] == ["10.0.0.7"]


async def test_resolver_judges_every_answer_so_a_rebound_name_is_caught() -> None:
    """DNS rebinding: the answer changes after a first look; each resolution is judged again."""
    inner = MapResolver({"rebind.example": ["93.184.215.14"]})
    guard = GuardedResolver((), inner=inner)
    await guard.resolve("rebind.example", 80)
    inner.answers["rebind.example"] = ["127.0.0.1"]
    with pytest.raises(TargetRefusedError, match="loopback"):
        await guard.resolve("rebind.example", 80)
    assert inner.asked == ["rebind.example", "rebind.example"]


# --- end to end, against recording servers on loopback ---------------------------------------


@dataclass
class Recorder:
    """Answers 200 (or what ``reply`` says) on 127.0.0.1 and ::1 and keeps every hit."""

    port: int = 0
    hits: list[str] = field(default_factory=list)
    reply: web.StreamResponse | None = None
    bytes_sent: int = 0
    streaming_done: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(f"{request.method} {request.host}{request.path_qs}")
        return web.json_response({"ok": True})

    async def handle_big(self, request: web.Request) -> web.StreamResponse:
        """A reply far larger than any webhook answer: 200 MiB, streamed."""
        self.hits.append(f"{request.method} {request.host}{request.path_qs}")
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"x" * MiB
        try:
            for _ in range(200):
                await response.write(chunk)
                self.bytes_sent += len(chunk)
        finally:
            self.streaming_done.set()
        return response


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder(port=free_port())
    app = web.Application()
    app.router.add_route("*", "/big", rec.handle_big)
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    for host in ("127.0.0.1", "::1"):
        await web.TCPSite(runner, host, rec.port).start()
    try:
        yield rec
    finally:
        await runner.cleanup()


def closed_settings(settings: Settings, *allowed: str) -> Settings:
    """The test settings with no host allow-listed but ``allowed``."""
    return settings.model_copy(update={"webhook_allowed_hosts": allowed})


def reachable_attack_urls(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/hook",
        f"http://localhost:{port}/hook",
        f"http://[::1]:{port}/hook",
        f"http://0.0.0.0:{port}/hook",
        f"http://[::ffff:127.0.0.1]:{port}/hook",
    ]


def attack_urls(port: int) -> list[str]:
    # legacy numeric forms: aiohttp 3.14 also refuses them itself, older versions did not
    return [
        *reachable_attack_urls(port),
        f"http://127.1:{port}/hook",
        f"http://2130706433:{port}/hook",
    ]


async def test_the_recorder_is_reachable_at_every_attack_address(
    settings: Settings, recorder: Recorder
) -> None:
    """Control: with the guard out of the way each URL really hits the recorder, so the
    refusals below are refusals and not connection failures."""
    async with aiohttp.ClientSession() as session:
        for url in reachable_attack_urls(recorder.port):
            async with session.get(url) as response:
                assert response.status == 200, url
    assert len(recorder.hits) == len(reachable_attack_urls(recorder.port))


async def test_loopback_targets_are_refused_at_the_door(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis, recorder: Recorder
) -> None:
    client = await aiohttp_client(create_app(closed_settings(settings)), headers=AUTH_HEADERS)
    for url in attack_urls(recorder.port):
        response = await client.post("/webhooks", json={"url": url, "payload": PAYLOAD})
        assert response.status == 400, url
        assert response.content_type == "application/json"
        assert "WEBHOOK_ALLOWED_HOSTS" in (await response.json())["error"]
    assert await queued(redis, settings) == []
    assert recorder.hits == []


async def test_a_queued_job_for_a_loopback_target_fails_once_and_never_connects(
    client: TestClient[Any, Any],
    settings: Settings,
    redis: ArqRedis,
    run_worker: RunWorker,
    recorder: Recorder,
) -> None:
    """A job that never passed the door (queued by other code) meets the same check."""
    task_ids = [
        await enqueue(redis, "deliver_webhook", {"url": url, "payload": PAYLOAD})
        for url in attack_urls(recorder.port)
    ]
    await run_worker(closed_settings(settings))
    for task_id in task_ids:
        status = await status_of(client, task_id)
        assert status["status"] == "FAILURE", status
        assert "webhook target refused" in status["error"]
        assert status["attempts"] == 1, "a refused target is not retried"
    assert recorder.hits == []


async def run_worker_with_test_dns(
    run_worker: RunWorker, settings: Settings, dns: MapResolver
) -> None:
    """The real worker, its HTTP session resolving through ``dns`` behind the guard."""
    start = worker_options(settings)["on_startup"]

    async def on_startup(ctx: dict[str, Any]) -> None:
        await start(ctx)
        await ctx["http"].close()
        guard = GuardedResolver(settings.webhook_allowed_hosts, inner=dns)
        ctx["http"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=guard))

    await run_worker(settings, on_startup=on_startup)


async def test_a_name_that_resolves_to_loopback_passes_the_door_but_fails_the_job(
    client: TestClient[Any, Any],
    settings: Settings,
    redis: ArqRedis,
    run_worker: RunWorker,
    recorder: Recorder,
) -> None:
    dns = MapResolver({"hooks.example.test": ["127.0.0.1"]})
    own = closed_settings(settings)
    door = await client.post(
        "/webhooks",
        json={"url": f"http://hooks.example.test:{recorder.port}/hook", "payload": PAYLOAD},
    )
    assert door.status == 202, "the door cannot know where a name resolves"
    task_id = (await door.json())["task_id"]
    await run_worker_with_test_dns(run_worker, own, dns)
    status = await status_of(client, task_id)
    assert status["status"] == "FAILURE"
    assert "hooks.example.test does not resolve to a public address" in status["error"]
    assert "127.0.0.1" not in status["error"], "what our DNS answers stays in the worker's log"
    assert status["attempts"] == 1
    assert dns.asked == ["hooks.example.test"]
    assert recorder.hits == []


async def test_the_same_name_allow_listed_is_delivered(
    client: TestClient[Any, Any],
    settings: Settings,
    redis: ArqRedis,
    run_worker: RunWorker,
    recorder: Recorder,
) -> None:
    """Control for the test above: the test DNS does route the name to the recorder."""
    dns = MapResolver({"hooks.example.test": ["127.0.0.1"]})
    url = f"http://hooks.example.test:{recorder.port}/hook"
    task_id = await enqueue(redis, "deliver_webhook", {"url": url, "payload": PAYLOAD})
    await run_worker_with_test_dns(run_worker, closed_settings(settings, "hooks.example.test"), dns)
    assert (await status_of(client, task_id))["status"] == "SUCCESS"
    assert recorder.hits == [f"POST hooks.example.test:{recorder.port}/hook"]


async def test_an_allowed_name_with_a_port_is_delivered_on_that_port_only(
    client: TestClient[Any, Any],
    settings: Settings,
    redis: ArqRedis,
    run_worker: RunWorker,
    recorder: Recorder,
) -> None:
    """``name:port`` opens the name on that port: the same URL, allow-listed on another port,
    meets the loopback refusal (the recorder is reachable: the test above)."""
    dns = MapResolver({"hooks.example.test": ["127.0.0.1"]})
    url = f"http://hooks.example.test:{recorder.port}/hook"
    opened = f"hooks.example.test:{recorder.port}"
    task_id = await enqueue(redis, "deliver_webhook", {"url": url, "payload": PAYLOAD})
    await run_worker_with_test_dns(run_worker, closed_settings(settings, opened), dns)
    assert (await status_of(client, task_id))["status"] == "SUCCESS"
    assert recorder.hits == [f"POST {opened}/hook"]

    other_port = f"hooks.example.test:{recorder.port + 1}"
    task_id = await enqueue(redis, "deliver_webhook", {"url": url, "payload": PAYLOAD})
    await run_worker_with_test_dns(run_worker, closed_settings(settings, other_port), dns)
    status = await status_of(client, task_id)
    assert status["status"] == "FAILURE"
    assert "hooks.example.test does not resolve to a public address" in status["error"]
    assert "127.0.0.1" not in status["error"], "what our DNS answers stays in the worker's log"
    assert status["attempts"] == 1
    assert recorder.hits == [f"POST {opened}/hook"]


async def test_a_public_looking_url_that_redirects_to_loopback_is_not_followed(
    client: TestClient[Any, Any],
    settings: Settings,
    redis: ArqRedis,
    run_worker: RunWorker,
    recorder: Recorder,
    aiohttp_server: Any,
) -> None:
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{recorder.port}/stolen")

    app = web.Application()
    app.router.add_post("/hook", redirect)
    public = await aiohttp_server(app)
    # "api.example.test" stands for a public host; the test DNS points it at the redirector
    dns = MapResolver({"api.example.test": ["127.0.0.1"]})
    url = f"http://api.example.test:{public.port}/hook"
    task_id = await enqueue(redis, "deliver_webhook", {"url": url, "payload": PAYLOAD})
    await run_worker_with_test_dns(run_worker, closed_settings(settings, "api.example.test"), dns)
    status = await status_of(client, task_id)
    assert status["status"] == "FAILURE"
    assert "redirects are not followed" in status["error"]
    assert status["attempts"] == 1
    assert recorder.hits == []


async def test_a_huge_answer_is_read_only_a_little(
    client: TestClient[Any, Any],
    settings: Settings,
    redis: ArqRedis,
    run_worker: RunWorker,
    recorder: Recorder,
) -> None:
    url = f"http://127.0.0.1:{recorder.port}/big"
    task_id = await enqueue(redis, "deliver_webhook", {"url": url, "payload": PAYLOAD})
    await run_worker()
    assert (await status_of(client, task_id))["status"] == "SUCCESS"
    await asyncio.wait_for(recorder.streaming_done.wait(), 10)
    # socket buffers take a few MiB; a full read would be 200 MiB
    assert recorder.bytes_sent < 32 * MiB
