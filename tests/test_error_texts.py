"""What a failure tells API clients and what it tells the log (issues 14.5 and 18.8).

A real worker process (``arq service.WorkerSettings``, logging JSON to a file) runs jobs
queued through the web app: an email to an SMTP server by an internal-looking name (a
loopback alias from /etc/hosts, on a closed port: no traffic leaves loopback) and a webhook
whose URL carries credentials and a token, to a loopback target that does not speak HTTP.
No API answer (status, failed-jobs list, dashboard pages) may name the host, the port or the
secrets; the worker's log line for the job (with its job id and request id) has the full
text, secrets masked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.observability.masking import MASK, mask_text
from service.runtime import connection_problem
from service.worker.failures import UNEXPECTED, full_text, public_error, public_reason
from settings import Settings
from tests.conftest import TEST_API_TOKEN, ClientFactory, free_port, status_of
from tests.dashboard_client import Dashboard
from tests.processes import ServiceProcess
from tests.test_worker_process import service_env
from tests.waiting import wait_until
from web import create_app

HOOK_USER, HOOK_PASSWORD, HOOK_TOKEN = "hookuser", "hookpass9", "s3cret-tok3n"


def _loopback_alias() -> str:
    """A name /etc/hosts gives 127.0.0.1 other than ``localhost`` (it reads as an internal
    host in an error), else ``localhost``: resolved from the file, never by DNS."""
    for line in Path("/etc/hosts").read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields and fields[0] == "127.0.0.1":
            for name in fields[1:]:
                if name != "localhost" and "." not in name and len(name) >= 4:
                    return name
    return "localhost"


@pytest.fixture
def smtp_alias() -> tuple[str, int]:
    """An SMTP server address nothing listens on: a loopback alias and a closed port."""
    return _loopback_alias(), free_port()


@pytest.fixture
def worker(
    settings: Settings, tmp_path: Path, smtp_alias: tuple[str, int], redis: ArqRedis
) -> Iterator[ServiceProcess]:
    host, port = smtp_alias
    env = service_env(
        settings,
        SMTP_HOST=host,
        SMTP_PORT=str(port),
        SMTP_TIMEOUT="2",
        EMAIL_JOB_TIMEOUT="10",
        JOB_MAX_TRIES="2",
        RETRY_BACKOFF_BASE="0.01",
        RETRY_BACKOFF_MAX="0.05",
        WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        LOG_FORMAT="json",
        API_TOKENS=TEST_API_TOKEN,
    )
    command = ["-m", "arq", "service.WorkerSettings", "--custom-log-dict", "service.LOGGING"]
    process = ServiceProcess(command, env, tmp_path / "worker.log")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def not_http() -> AsyncIterator[int]:
    """A loopback port that answers any request with bytes that are not HTTP."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _failed(client: TestClient[Any, Any], task_id: str) -> dict[str, Any]:
    async def done() -> bool:
        return bool((await status_of(client, task_id))["status"] == "FAILURE")

    await wait_until(done, within=60, interval=0.1)
    return await status_of(client, task_id)


async def _everything_clients_see(
    client: TestClient[Any, Any], board: Dashboard, task_id: str
) -> str:
    """Every answer that shows the job: status, failed-jobs list, the dashboard's pages."""
    status = await (await client.get(f"/task-status/{task_id}")).text()
    failed = await (await client.get("/jobs/failed")).text()
    assert task_id in failed
    overview = await board.page("/dashboard")
    page = await board.page(f"/dashboard/jobs/{task_id}")
    return "\n".join([status, failed, overview, page])


async def _job_lines(worker: ServiceProcess, task_id: str) -> list[dict[str, Any]]:
    await asyncio.to_thread(worker.stop)  # its log is complete once it has stopped
    text = await asyncio.to_thread(worker.log.read_text)
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("job_id") == task_id]


async def test_an_unreachable_smtp_server_is_named_in_the_log_only(
    client: TestClient[Any, Any],
    aiohttp_client: ClientFactory,
    settings: Settings,
    worker: ServiceProcess,
    smtp_alias: tuple[str, int],
) -> None:
    host, port = smtp_alias
    email = {"to": "ann@example.com", "subject": "Hello", "body": "Hi"}
    response = await client.post("/send-email", json=email, headers={"X-Request-ID": "req-145"})
    assert response.status == 202, await response.text()
    task_id = (await response.json())["task_id"]

    status = await _failed(client, task_id)
    reason = "SMTP server unreachable (connection refused)"
    assert status["error"] == f"PermanentError: gave up after 2 attempts: {reason}"
    assert [attempt["error"] for attempt in status["history"]] == [
        reason,
        f"gave up after 2 attempts: {reason}",
    ]
    board = Dashboard(await aiohttp_client(create_app(settings)))
    assert (await board.sign_in()).status == 303
    seen = await _everything_clients_see(client, board, task_id)
    assert reason in seen
    for internal in (host, f"port {port}", str(port), "Errno", "Traceback"):
        assert internal not in seen, f"{internal!r} reached an API answer"

    lines = await _job_lines(worker, task_id)
    logged = [line for line in lines if host in line.get("error", "")]
    assert logged, f"no log line of job {task_id} names {host}: {lines}"
    assert all(line["request_id"] == "req-145" for line in logged)
    assert any(f"port {port}" in line["error"] for line in logged)


async def test_a_webhook_urls_secrets_are_masked_in_answers_and_log(
    client: TestClient[Any, Any],
    aiohttp_client: ClientFactory,
    settings: Settings,
    worker: ServiceProcess,
    not_http: int,
) -> None:
    url = f"http://{HOOK_USER}:{HOOK_PASSWORD}@127.0.0.1:{not_http}/hook?token={HOOK_TOKEN}&a=1"
    response = await client.post(
        "/webhooks", json={"url": url, "payload": {"n": 1}}, headers={"X-Request-ID": "req-188"}
    )
    assert response.status == 202, await response.text()
    task_id = (await response.json())["task_id"]

    status = await _failed(client, task_id)
    assert status["error"].startswith("PermanentError: webhook request failed")
    assert f"token={MASK}&a=1" in status["error"], "the URL keeps its shape"
    board = Dashboard(await aiohttp_client(create_app(settings)))
    assert (await board.sign_in()).status == 303
    seen = await _everything_clients_see(client, board, task_id)
    page = await board.page(f"/dashboard/jobs/{task_id}")
    # a finished job's page shows the copy its tracking hash keeps: masked, with the request id
    assert f"127.0.0.1:{not_http}/hook?token={MASK}" in page
    assert "req-188" in page
    lines = await _job_lines(worker, task_id)
    failure = [line for line in lines if line.get("event") == "job_end"]
    assert failure
    assert "Bad status line" in failure[0]["error"]
    assert failure[0]["request_id"] == "req-188"
    log = await asyncio.to_thread(worker.log.read_text)
    for secret in (HOOK_TOKEN, HOOK_PASSWORD, HOOK_USER):
        assert secret not in seen, f"{secret!r} reached an API answer"
        assert secret not in log, f"{secret!r} reached the worker's log"


def test_an_unexpected_exception_shows_clients_only_its_type() -> None:
    try:
        try:
            raise ConnectionRefusedError(111, "Connect call failed ('10.1.2.3', 5432)")
        except OSError as exc:
            raise KeyError("customer ann@example.com, card 4111 1111 1111 1111") from exc
    except KeyError as exc:
        error = exc
    assert public_reason(error) == f"KeyError: {UNEXPECTED}"
    assert str(public_error(error)) == f"KeyError: {UNEXPECTED}"
    logged = full_text(error)
    assert "4111 1111 1111 1111" in logged, "the log has the whole story"
    assert "10.1.2.3" in logged
    assert connection_problem(error) == "connection refused"


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        ("url='http://u:pw@h.example:8080/p?token=abc&page=2'", ["pw", "abc"], ["page=2", "/p"]),
        ("Cannot connect to host u:pw@h.example:80", ["u:pw"], ["h.example:80"]),
        ("GET /jobs?api_key=k3y&limit=5", ["k3y"], ["limit=5"]),
        ("password=hunter2; retries=3", ["hunter2"], ["retries=3"]),
        ('{"to": "ann@example.com"}', [], ["ann@example.com"]),
    ],
)
def test_the_one_masking_rule_in_free_text(text: str, hidden: list[str], kept: list[str]) -> None:
    masked = mask_text(text)
    assert all(secret not in masked for secret in hidden), masked
    assert all(part in masked for part in kept), masked
