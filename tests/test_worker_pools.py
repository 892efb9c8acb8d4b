"""Named queues and worker pools (WORKER_QUEUES), with real worker processes: a pool takes
only its own queues' jobs, drains them, and /health counts each queue and its workers."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from jobs.registry import REGISTRY
from service.engine.arq_api import timestamp_ms
from service.observability.metrics import exposition
from service.queue.enqueue import enqueue
from service.runtime import Cron, Job, NoInput, Registry
from service.worker.options import worker_options
from settings import Settings, SettingsError
from tests.conftest import ClientFactory, RunWorker, SmtpRecorder, status_of
from tests.dashboard_client import Dashboard
from tests.images import image_bytes
from tests.processes import ROOT, ServiceProcess
from tests.test_worker_process import service_env
from tests.waiting import wait_until
from web import create_app


@asynccontextmanager
async def worker_pool(
    settings: Settings, tmp_path: Path, queues: str
) -> AsyncIterator[ServiceProcess]:
    """``arq service.WorkerSettings`` with WORKER_QUEUES=``queues``, stopped on the way out."""
    log = tmp_path / f"worker-{queues.replace(',', '-')}.log"
    process = await asyncio.to_thread(  # Popen and the log's open block
        ServiceProcess,
        ["-m", "arq", "service.WorkerSettings"],
        service_env(settings, WORKER_QUEUES=queues, LOG_FORMAT="text"),
        log,
    )
    try:
        yield process
    finally:
        await asyncio.to_thread(process.stop)


async def _upload(client: TestClient[Any, Any]) -> str:
    form = aiohttp.FormData()
    form.add_field("file", image_bytes((320, 240)), filename="p.jpg", content_type="image/jpeg")
    response = await client.post("/upload", data=form)
    assert response.status == 202, await response.text()
    return str((await response.json())["task_id"])


async def _email(client: TestClient[Any, Any], n: int) -> str:
    body = {"to": f"ann{n}@example.com", "subject": f"pool {n}", "body": "hi"}
    response = await client.post("/send-email", json=body)
    assert response.status == 202, await response.text()
    return str((await response.json())["task_id"])


async def _states(client: TestClient[Any, Any], ids: list[str]) -> set[str]:
    return {(await status_of(client, task_id))["status"] for task_id in ids}


async def _all_done(client: TestClient[Any, Any], ids: list[str]) -> None:
    async def done() -> bool:
        return await _states(client, ids) == {"SUCCESS"}

    await wait_until(done, within=60, interval=0.1)


def _after_start(log: str) -> str:
    """A worker's log after the line listing every function it knows."""
    return log.split("Starting worker for", 1)[-1].split("\n", 1)[-1]


async def _queues(client: TestClient[Any, Any]) -> dict[str, Any]:
    health: dict[str, Any] = await (await client.get("/health")).json()
    return dict(health["queues"])


async def test_each_pool_takes_only_its_own_queues_jobs_and_drains_them(
    client: TestClient[Any, Any], settings: Settings, smtp_server: SmtpRecorder, tmp_path: Path
) -> None:
    emails = [await _email(client, n) for n in range(3)]
    thumbnails = [await _upload(client) for _ in range(3)]
    assert (await _queues(client))["images"]["waiting"] == 3

    async with worker_pool(settings, tmp_path, "images") as images:
        await _all_done(client, thumbnails)

        async def counted() -> bool:
            queues = await _queues(client)
            return bool(queues["images"]["workers"] == 1 and queues["default"]["workers"] == 0)

        await wait_until(counted, within=20, interval=0.1)
        # the images pool took no email: all still waiting, none sent
        assert await _states(client, emails) == {"PENDING"}
        assert smtp_server.messages == []
        assert (await _queues(client))["default"]["waiting"] == 3

        more_thumbnails = [await _upload(client) for _ in range(2)]
        async with worker_pool(settings, tmp_path, "default") as default:
            await _all_done(client, emails)
            await _all_done(client, more_thumbnails)
            assert sorted(m.message["Subject"] for m in smtp_server.messages) == [
                "pool 0",
                "pool 1",
                "pool 2",
            ]
        assert default.popen.returncode == 0
    assert images.popen.returncode == 0
    # the default pool's log shows no thumbnail: the images pool made all five
    default_log = await asyncio.to_thread((tmp_path / "worker-default.log").read_text)
    images_log = await asyncio.to_thread((tmp_path / "worker-images.log").read_text)
    assert "process_image" not in _after_start(default_log)
    assert "send_email" not in _after_start(images_log)
    assert "process_image" in _after_start(images_log)
    queues = await _queues(client)
    assert {name: q["waiting"] + q["deferred"] for name, q in queues.items()} == {
        "default": 0,
        "images": 0,
    }


async def test_a_pool_of_only_email_takes_no_thumbnail(
    client: TestClient[Any, Any], settings: Settings, smtp_server: SmtpRecorder, tmp_path: Path
) -> None:
    thumbnail = await _upload(client)
    email = await _email(client, 0)
    async with worker_pool(settings, tmp_path, "default"):
        await _all_done(client, [email])

        async def counted() -> bool:
            return bool((await _queues(client))["default"]["workers"] == 1)

        # its health line written: it has run loop iterations, and left the thumbnail alone
        await wait_until(counted, within=20, interval=0.1)
        assert await _states(client, [thumbnail]) == {"PENDING"}
        assert (await _queues(client))["images"] == {
            "waiting": 1,
            "deferred": 0,
            "running": 0,
            "workers": 0,
        }


async def test_an_unknown_queue_name_stops_the_worker_at_start(
    settings: Settings, tmp_path: Path
) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "arq", "service.WorkerSettings"],
        cwd=ROOT,
        env=service_env(settings, WORKER_QUEUES="images,imagse"),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode != 0
    text = (done.stdout + done.stderr).decode()
    assert "WORKER_QUEUES names imagse, which no job declares" in text
    assert "Traceback" not in text


def test_worker_queues_must_be_queue_names() -> None:
    for bad in ("Images", "high", "a-b", "9x"):
        with pytest.raises(ValueError, match="is not a queue name"):
            Settings(worker_queues=bad)
    assert Settings(worker_queues="images, email,images").worker_queues == ("images", "email")


async def _nothing(ctx: dict[str, Any]) -> None:
    """A scheduled no-op."""


def test_cron_jobs_are_scheduled_only_by_workers_serving_their_queue(settings: Settings) -> None:
    nightly = Job(name="nightly", run=_nothing, input=NoInput, cron=Cron(hour=3), queue="images")
    registry = Registry([*REGISTRY, nightly])
    crons = {
        queues: sorted(
            job.name
            for job in worker_options(
                settings.model_copy(update={"worker_queues": queues}), registry
            )["cron_jobs"]
        )
        for queues in [(), ("images",), ("default",)]
    }
    assert crons[("images",)] == ["cron:nightly"]
    assert crons[("default",)] == ["cron:cleanup_old_files", "cron:daily_report"]
    assert crons[()] == ["cron:cleanup_old_files", "cron:daily_report", "cron:nightly"]
    pool = worker_options(settings.model_copy(update={"worker_queues": ("images",)}), registry)
    # arq's cron queues a run on its schedule's queue, not on arq's default one
    assert pool["redis_pool"].cron_queues == {"cron:nightly": f"{settings.queue_name}:images"}
    with pytest.raises(SettingsError, match="WORKER_QUEUES names email"):
        worker_options(settings.model_copy(update={"worker_queues": ("email",)}), registry)


async def test_the_overview_lists_each_queue_with_its_depth_and_workers(
    aiohttp_client: ClientFactory, settings: Settings, redis: ArqRedis
) -> None:
    board = Dashboard(await aiohttp_client(create_app(settings)))
    assert (await board.sign_in()).status == 303
    await enqueue(redis, "process_image", {"upload": "x.jpg"}, queue="images", priority="low")
    await enqueue(redis, "log_event", {"event": "later"}, run_at_ms=timestamp_ms() + 60_000)
    page = await board.page("/dashboard")
    rows = re.findall(r'<tr id="queue-(\w+)">(.*?)</tr>', page)
    cells = {name: re.findall(r"<td[^>]*>([^<]*)</td>", row)[1:4] for name, row in rows}
    assert cells == {"default": ["0", "1", "0"], "images": ["1", "0", "0"]}


async def test_the_metrics_count_each_queue_and_its_workers(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, run_worker: RunWorker
) -> None:
    later = await enqueue(redis, "log_event", {"event": "later"}, run_at_ms=timestamp_ms() + 60_000)
    await enqueue(redis, "process_image", {"upload": "x.jpg"}, queue="images", priority="high")
    text = await (await client.get("/metrics")).text()
    assert 'jobservice_named_queue_jobs{queue="images",state="waiting"} 1.0' in text
    assert 'jobservice_named_queue_jobs{queue="default",state="deferred"} 1.0' in text
    assert 'jobservice_queue_workers{queue="images"} 0.0' in text

    await redis.zrem(settings.queue_name, later)  # a burst worker would wait for it
    worker = await run_worker()  # burst: its health line and metrics are written at its start
    own = (await exposition(worker.ctx["metrics"].registry)).decode()
    assert 'jobservice_named_queue_jobs{queue="images",state="deferred"} 0.0' in own
    assert 'jobservice_queue_workers{queue="images"} 1.0' in own
    assert 'jobservice_queue_workers{queue="default"} 1.0' in own


async def test_arqs_cron_queues_a_run_on_its_schedules_queue(
    settings: Settings, redis: ArqRedis
) -> None:
    nightly = Job(name="nightly", run=_nothing, input=NoInput, cron=Cron(hour=3), queue="images")
    options = worker_options(settings, Registry([*REGISTRY, nightly]))
    pool = options["redis_pool"]
    try:  # as arq's run_cron calls it, naming the worker's own queue
        await pool.enqueue_job(
            "cron:nightly", _job_id="cron:nightly:1", _queue_name=settings.queue_name
        )
        await pool.enqueue_job("cron:daily_report", _job_id="cron:daily_report:1")
    finally:
        await pool.aclose(close_connection_pool=True)
    assert await redis.zrange(f"{settings.queue_name}:images", 0, -1) == [b"cron:nightly:1"]
    assert await redis.zrange(settings.queue_name, 0, -1) == [b"cron:daily_report:1"]
