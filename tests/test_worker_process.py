"""The real entry points as users start them: `arq service.WorkerSettings` and `python -m web`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from settings import Settings
from tests.conftest import SmtpRecorder, status_of
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "REDIS", "DATA"))}
    env.update(
        REDIS_URL=settings.redis_url,
        DATA_DIR=str(settings.data_dir),
        SMTP_HOST=settings.smtp_host,
        SMTP_PORT=str(settings.smtp_port),
    )
    env.update(extra)
    return env


@pytest.fixture
def worker_process(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    # output goes to a file: a pipe nobody reads would block a chatty worker once full
    with (tmp_path / "worker.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "arq", "service.WorkerSettings"],
            cwd=ROOT,
            env=service_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


async def test_arq_cli_worker_runs_jobs_and_stops_on_sigterm(
    client: TestClient[Any, Any],
    worker_process: subprocess.Popen[bytes],
    smtp_server: SmtpRecorder,
) -> None:
    response = await client.post(
        "/send-email", json={"to": "ann@example.com", "subject": "From a process", "body": "hi"}
    )
    task_id = (await response.json())["task_id"]

    async def finished() -> bool:
        return bool((await status_of(client, task_id))["status"] == "SUCCESS")

    await wait_until(finished, within=30)
    assert [m.message["Subject"] for m in smtp_server.messages] == ["From a process"]
    health = await (await client.get("/health")).json()
    assert health["worker"]["alive"] is True

    worker_process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(worker_process.wait, 30)
    assert code == 0


@pytest.mark.parametrize(
    "command",
    [["-m", "arq", "service.WorkerSettings"], ["-m", "web"], ["-m", "service.dev.mailsink"]],
)
def test_entry_points_refuse_bad_settings_naming_the_variable(
    settings: Settings, command: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env=service_env(settings, SMTP_PORT="not-a-port"),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode != 0
    output = (result.stdout + result.stderr).decode()
    assert "SMTP_PORT" in output
    assert "Traceback" not in output


def test_make_dev_explains_how_to_get_redis_when_none_runs_or_can_start(
    settings: Settings,
) -> None:
    from tests.conftest import free_port

    env = service_env(settings, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    env["PATH"] = str(Path(sys.executable).parent)  # no redis-server on this PATH
    result = subprocess.run(
        [sys.executable, "-m", "service.dev"], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    assert result.returncode != 0
    output = (result.stdout + result.stderr).decode()
    assert "redis-server` is not installed" in output
    assert "apt-get install redis-server" in output
    assert "Traceback" not in output


def _arq_check(settings: Settings) -> int:
    command = [sys.executable, "-m", "arq", "service.WorkerSettings", "--check"]
    done = subprocess.run(
        command, cwd=ROOT, env=service_env(settings), capture_output=True, timeout=30, check=False
    )
    return done.returncode


async def test_arq_check_fails_with_no_worker_running(settings: Settings) -> None:
    assert await asyncio.to_thread(_arq_check, settings) == 1


async def test_arq_check_passes_while_a_worker_runs_and_health_lists_it(
    client: TestClient[Any, Any], settings: Settings, worker_process: subprocess.Popen[bytes]
) -> None:
    async def check_passes() -> bool:
        return await asyncio.to_thread(_arq_check, settings) == 0

    await wait_until(check_passes, within=30)
    # the same health line, copied under the worker's own key, is what /health counts
    health = await (await client.get("/health")).json()
    assert health["worker"]["alive"] is True
    assert health["worker"]["count"] == 1
