"""What jobs share in one worker process: opened once at start-up, closed at shutdown.

The worker's ctx holds them (service.runtime.JobContext, jobs.mail.MailContext): the
settings, file storage (folders or an S3 bucket), the users database, one HTTP session (its
resolver is the webhooks' SSRF guard), a thread pool for Pillow and file walks, the SMTP
pool, this worker's metrics (the circuit breakers' re-read every 10 s) and the overview
graphs' counts (written once a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
from redis.exceptions import RedisError

from jobs.mail import SmtpConfig, SmtpPool
from jobs.thumbnails import configure_pillow
from jobs.webhook_guard import GuardedResolver
from service.observability.metrics import JobMetrics, new_registry
from service.observability.metrics_server import start_metrics_server
from service.records import tallies
from service.records.workers import register, unregister, worker_name
from service.store.database import Database, DatabaseOpenError, open_database
from service.store.storage import Storage, open_storage
from service.worker import breakers
from settings import Settings

logger = logging.getLogger("jobservice.worker")

OnStartup = Any  # arq's startup hook: async (ctx) -> None


async def _open_files(settings: Settings) -> Storage:
    """Where uploads, thumbnails and reports are (checked: a wrong STORAGE_URL, endpoint or
    key stops the worker here, naming the setting), and the image limits thumbnails keep."""
    configure_pillow(settings.max_image_pixels)
    return await open_storage(settings)


async def _open_database(settings: Settings) -> Database:
    """The users database; one that cannot be opened stops the worker with one clear line
    (naming DATABASE_URL, never its password) rather than a traceback."""
    try:
        return await open_database(settings)
    except DatabaseOpenError as exc:
        logger.error("%s", exc)
        raise SystemExit(f"worker: {exc}") from None


def open_resources(settings: Settings) -> OnStartup:
    """arq's ``on_startup`` for these settings."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["settings"] = settings
        ctx["storage"] = await _open_files(settings)
        ctx["db"] = await _open_database(settings)
        ctx["http"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=settings.worker_max_jobs,
                resolver=GuardedResolver(settings.webhook_allowed_hosts),  # SSRF guard
            ),
            raise_for_status=False,
        )
        ctx["executor"] = ThreadPoolExecutor(
            max_workers=settings.image_threads, thread_name_prefix="jobs"
        )
        ctx["smtp"] = SmtpConfig.from_settings(settings)
        ctx["smtp_pool"] = SmtpPool(ctx["smtp"], settings.smtp_connections_kept)
        ctx["metrics"] = JobMetrics(new_registry())
        ctx["tallies"], ctx["tallies_task"] = tallies.start(ctx["redis"])
        ctx["breakers_task"] = breakers.start_refresh(ctx["redis"], ctx["metrics"].breakers)
        if settings.worker_metrics_port:
            ctx["metrics_server"] = await start_metrics_server(
                ctx["metrics"].registry, settings.worker_metrics_host, settings.worker_metrics_port
            )
        await register(ctx["redis"], worker_name(), settings.worker_max_jobs)
        logger.info("worker ready: max_jobs=%d", settings.worker_max_jobs)

    return on_startup


async def close_resources(ctx: dict[str, Any]) -> None:
    """arq's ``on_shutdown``: close what on_startup opened; a start-up that failed half way
    leaves some of it unopened."""
    if "http" in ctx:
        await ctx["http"].close()
    if "executor" in ctx:
        # waiting for running resizes blocks, so wait in a thread, not on the loop
        await asyncio.get_running_loop().run_in_executor(None, ctx["executor"].shutdown)
    if "db" in ctx:
        await ctx["db"].close()
    if "storage" in ctx:
        await ctx["storage"].close()
    if "smtp_pool" in ctx:
        await ctx["smtp_pool"].close()
    if ctx.get("metrics_server") is not None:
        await ctx["metrics_server"].cleanup()
    if "breakers_task" in ctx:
        await breakers.stop_refresh(ctx["breakers_task"])
    if "tallies" in ctx:
        await tallies.stop(ctx["tallies"], ctx["tallies_task"], ctx["redis"])
    with contextlib.suppress(RedisError, OSError):  # Redis may be the reason we stop
        await unregister(ctx["redis"], worker_name())
