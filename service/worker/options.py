"""The arq worker's wiring: which jobs run, on what schedule, with which shared resources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import aiohttp
from arq import cron, func
from arq.constants import health_check_key_suffix
from arq.cron import CronJob
from arq.typing import WorkerCoroutine
from arq.worker import Function
from redis.exceptions import RedisError

from jobs.cleanup import cleanup_old_files
from jobs.email import send_email
from jobs.events import log_event
from jobs.images import process_image
from jobs.mail.smtp_pool import SmtpPool
from jobs.reports import daily_report
from jobs.thumbnails import configure_pillow
from jobs.webhook_guard import GuardedResolver
from jobs.webhooks import deliver_webhook
from jobs.welcome import send_welcome_email
from service.engine.wakeup import waking_pool
from service.observability.logs import configure_logging
from service.observability.metrics import JobMetrics, new_registry
from service.observability.metrics_server import start_metrics_server
from service.queue.enqueue import JobName
from service.records.workers import health_key, register, unregister, worker_name
from service.runtime.context import JobContext, SmtpConfig
from service.store.database import Database
from service.store.files import make_folders
from service.store.redis import worker_redis_settings
from service.store.serialization import deserialize, serialize
from service.worker.observe import observed
from service.worker.timeouts import job_timeouts
from service.worker.tracking import after_job, tracked
from settings import Settings

logger = logging.getLogger("jobservice.worker")

HEALTH_CHECK_INTERVAL = 10  # seconds; /health calls a worker dead once its key is this stale
# With slots free, an idle worker waits on the wake list (service.engine.wakeup), not on this delay;
# it only paces re-reads while all slots are taken.
POLL_DELAY = 0.005


def _startup(settings: Settings) -> Any:
    async def on_startup(ctx: dict[str, Any]) -> None:
        """Open what jobs share, once per worker process."""
        configure_pillow(settings.max_image_pixels)
        await asyncio.get_running_loop().run_in_executor(
            None, make_folders, settings.uploads_dir, settings.reports_dir
        )
        ctx["settings"] = settings
        ctx["db"] = await Database.open(settings.database_path)
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
        if settings.worker_metrics_port:
            ctx["metrics_server"] = await start_metrics_server(
                ctx["metrics"].registry, settings.worker_metrics_host, settings.worker_metrics_port
            )
        await register(ctx["redis"], worker_name(), settings.worker_max_jobs)
        logger.info("worker ready: max_jobs=%d", settings.worker_max_jobs)

    return on_startup


async def on_shutdown(ctx: dict[str, Any]) -> None:
    """Close what on_startup opened; tolerate a start-up that failed half way."""
    job_ctx = cast(JobContext, ctx)
    if "http" in ctx:
        await job_ctx["http"].close()
    if "executor" in ctx:
        # waiting for running resizes blocks, so wait in a thread, not on the loop
        await asyncio.get_running_loop().run_in_executor(None, job_ctx["executor"].shutdown)
    if "db" in ctx:
        await job_ctx["db"].close()
    if "smtp_pool" in ctx:
        await job_ctx["smtp_pool"].close()
    if ctx.get("metrics_server") is not None:
        await ctx["metrics_server"].cleanup()
    with contextlib.suppress(RedisError, OSError):  # Redis may be the reason we stop
        await unregister(job_ctx["redis"], worker_name())


def _job(fn: Callable[..., Awaitable[Any]]) -> WorkerCoroutine:
    """A job as arq registers it: observed, tracked, and typed as arq's coroutine protocol."""
    return cast(WorkerCoroutine, observed(tracked(fn)))


def _daily(
    fn: Callable[..., Awaitable[Any]], name: JobName, *, hour: int, settings: Settings
) -> CronJob:
    """A cron job at ``hour``:00:00 in CRON_TIMEZONE; its result is kept like any job's."""
    return cron(
        _job(fn),
        name=f"cron:{name}",
        hour={hour},
        minute={0},
        second={0},
        timeout=job_timeouts(settings)[name],
        max_tries=settings.job_max_tries,
        keep_result=settings.job_result_ttl,
    )


def worker_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``arq.Worker``; also the body of ``WorkerSettings``."""
    tries = settings.job_max_tries
    timeouts = job_timeouts(settings)
    redis = worker_redis_settings(settings)
    pool = waking_pool(redis, settings.queue_name)
    pool.start_lock_ms = int(settings.job_lock_margin * 1000)  # service.worker.timeouts, step 1
    pool.health_check_key = settings.queue_name + health_check_key_suffix
    pool.worker_health_key = health_key(settings.queue_name, worker_name())

    def job(fn: Callable[..., Awaitable[Any]], name: JobName, **options: Any) -> Function:
        return func(_job(fn), name=name, max_tries=tries, timeout=timeouts[name], **options)

    return {
        "functions": [
            job(send_email, JobName.SEND_EMAIL),
            job(send_welcome_email, JobName.SEND_WELCOME_EMAIL),
            job(process_image, JobName.PROCESS_IMAGE),
            job(deliver_webhook, JobName.DELIVER_WEBHOOK),
            job(log_event, JobName.LOG_EVENT, keep_result=0),
            job(daily_report, JobName.DAILY_REPORT),
            job(cleanup_old_files, JobName.CLEANUP_OLD_FILES),
        ],
        "cron_jobs": [
            _daily(daily_report, JobName.DAILY_REPORT, hour=0, settings=settings),
            _daily(cleanup_old_files, JobName.CLEANUP_OLD_FILES, hour=2, settings=settings),
        ],
        "on_startup": _startup(settings),
        "on_shutdown": on_shutdown,
        "after_job_end": after_job,
        "allow_abort_jobs": True,  # DELETE /jobs/{id} on a running job
        "redis_settings": redis,
        "redis_pool": pool,
        "poll_delay": POLL_DELAY,
        "queue_name": settings.queue_name,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "max_jobs": settings.worker_max_jobs,
        "job_timeout": settings.job_timeout,
        # SIGTERM: stop taking jobs, let running ones finish for this long, then cut them;
        # arq re-queues a cut job (CancelledError is retried), it is not failed
        "job_completion_wait": settings.worker_shutdown_grace,
        "max_tries": tries,
        "keep_result": settings.job_result_ttl,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        # arq's own per-queue key, so `arq --check` works; the pool copies each line to this
        # worker's own key, so /health and the dashboard can list each (service.records.workers)
        "health_check_key": pool.health_check_key,
        "timezone": settings.timezone,
    }


def _logging_first(settings: Settings, on_startup: Any) -> Any:
    async def configure_then_start(ctx: dict[str, Any]) -> None:
        configure_logging(settings)  # after arq's CLI set up its own, which this replaces
        await on_startup(ctx)

    return configure_then_start


def build_worker_settings(settings: Settings) -> type:
    """A ``WorkerSettings`` class (the CLI's entry point); arq reads only its own ``__dict__``.

    Only this entry point configures logging, so in-process workers in tests leave it alone.
    """
    options = worker_options(settings)
    options["on_startup"] = _logging_first(settings, options["on_startup"])
    return type("WorkerSettings", (), options)
