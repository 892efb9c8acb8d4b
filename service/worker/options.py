"""What ``arq service.WorkerSettings`` is: the worker built from the job registry.

Every declared job (jobs/registry.py) becomes an arq function, wrapped in observation (log
lines, metrics) and attempt tracking (history, retry policy), with its own time limit, tries
and result keeping; every job with a schedule also becomes an arq cron job. The client is
the engine's waking one, the job loop the engine's (service.engine).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from arq import cron, func

from jobs.registry import REGISTRY
from service.engine.arq_api import CronJob, Function, WorkerCoroutine, health_check_key_suffix
from service.engine.queues import QueueLayout, queue_key
from service.engine.wakeup import waking_pool
from service.observability.logs import configure_logging
from service.records.workers import health_key, worker_name
from service.runtime import Job, Registry
from service.store.redis import worker_redis_settings
from service.store.redis_checks import check_redis
from service.store.serialization import deserialize, serialize
from service.worker.breakers import guarded
from service.worker.observe import observed
from service.worker.rate_gate import rate_limited
from service.worker.resources import close_resources, open_resources
from service.worker.schedules import catch_up, steered
from service.worker.slots import KeyedSlots, limited
from service.worker.tracking import arq_failures, tracked
from settings import Settings, SettingsError

HEALTH_CHECK_INTERVAL = 10  # seconds; /health calls a worker dead once its key is this stale
# With slots free, an idle worker waits on the wake list (service.engine.wakeup), not on this
# delay; it only paces re-reads while all slots are taken.
POLL_DELAY = 0.005
# Queue entries one claim may read (arq's queue_read_limit). Jobs stay at the head of the queue
# while they run, and each worker holds up to twice its WORKER_MAX_JOBS there (running, and
# finishing their bookkeeping): a claim must read past them all to find a due job. arq's own
# default, max(max_jobs * 5, 100), stops at two full workers; this one at about ten.
OTHER_WORKERS_RUNNING = 1000


def _wrapped(job: Job, settings: Settings, slots: KeyedSlots | None) -> WorkerCoroutine:
    """A job as arq registers it: held back while its destination's circuit breaker is open,
    to its slot limit (``slots``) and to its rate limit (none of them for a cron run:
    ``slots`` None), observed, tracked, and typed as arq's coroutine protocol."""
    run = observed(job.name, tracked(job))
    if slots is not None:
        run = limited(job, settings, slots, rate_limited(job, settings, run))
        run = guarded(job, settings, run)
    return cast(WorkerCoroutine, run)


def _function(job: Job, settings: Settings, slots: KeyedSlots) -> Function:
    return func(
        _wrapped(job, settings, slots),
        name=job.name,
        max_tries=job.retry.tries(settings),
        timeout=job.seconds(settings),
        keep_result=settings.job_result_ttl if job.keep_result else 0,
    )


def _cron(job: Job, settings: Settings) -> CronJob:
    """A job's schedule, in CRON_TIMEZONE; a run keeps its result like any job's, and obeys
    the schedule's pause (service.worker.schedules). A cron run is never postponed for a slot:
    arq keeps its lock after it, so it would not run again."""
    assert job.cron is not None
    return cron(
        steered(job, settings, _wrapped(job, settings, None)),
        name=str(job.cron_name),
        **job.cron.fields(),
        timeout=job.seconds(settings),
        max_tries=job.retry.tries(settings),
        keep_result=settings.job_result_ttl if job.keep_result else 0,
    )


def served_queues(settings: Settings, layout: QueueLayout) -> tuple[str, ...]:
    """The queues this worker takes jobs from: WORKER_QUEUES, or every declared one; a name
    no job declares is a start-up error (a typo would leave its jobs waiting for ever)."""
    if not settings.worker_queues:
        return layout.queues
    unknown = layout.unknown(settings.worker_queues)
    if unknown:
        raise SettingsError(
            f"invalid settings: WORKER_QUEUES names {', '.join(unknown)}, which no job "
            f"declares; the queues are {', '.join(layout.queues)}"
        )
    return settings.worker_queues


def worker_options(settings: Settings, registry: Registry = REGISTRY) -> dict[str, Any]:
    """Keyword arguments for ``arq.Worker``; also the body of ``WorkerSettings``."""
    redis = worker_redis_settings(settings)
    layout = registry.layout(settings)
    served = served_queues(settings, layout)
    scheduled = [job for job in registry.scheduled() if job.queue in served]
    pool = waking_pool(redis, settings.queue_name)
    pool.start_lock_ms = int(settings.job_lock_margin * 1000)  # service.worker.lease, step 1
    pool.served_queues = served
    pool.ageing_ms = int(settings.priority_ageing_seconds * 1000)
    # arq's cron queues a schedule's run on the worker's queue: it goes to the schedule's own
    pool.cron_queues = {
        str(job.cron_name): queue_key(settings.queue_name, job.queue, job.priority)
        for job in scheduled
    }
    pool.health_check_key = settings.queue_name + health_check_key_suffix
    pool.worker_health_key = health_key(settings.queue_name, worker_name())
    slots = KeyedSlots()  # this worker's: its jobs' slots per key (webhooks per host)
    return {
        "functions": [_function(job, settings, slots) for job in registry],
        # a schedule is queued only by workers that serve its queue
        "cron_jobs": [_cron(job, settings) for job in scheduled],
        "on_startup": _catching_up(settings, registry, served, open_resources(settings)),
        "on_shutdown": close_resources,
        "after_job_end": arq_failures(registry),
        "allow_abort_jobs": True,  # DELETE /jobs/{id} on a running job
        "redis_settings": redis,
        "redis_pool": pool,
        "poll_delay": POLL_DELAY,
        "queue_name": settings.queue_name,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "max_jobs": settings.worker_max_jobs,
        "queue_read_limit": settings.worker_max_jobs + OTHER_WORKERS_RUNNING,
        # SIGTERM: stop taking jobs, let running ones finish for this long, then cut them;
        # arq re-queues a cut job (CancelledError is retried), it is not failed
        "job_completion_wait": settings.worker_shutdown_grace,
        "keep_result": settings.job_result_ttl,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        # arq's own per-queue key, so `arq --check` works; the pool copies each line to this
        # worker's own key, so /health and the dashboard can list each (service.records.workers)
        "health_check_key": pool.health_check_key,
        "timezone": settings.timezone,
    }


def _catching_up(
    settings: Settings, registry: Registry, served: tuple[str, ...], on_startup: Any
) -> Any:
    """``on_startup``, then the missed runs of the schedules of the ``served`` queues queued
    (CRON_CATCH_UP)."""

    async def start_then_catch_up(ctx: dict[str, Any]) -> None:
        await on_startup(ctx)
        now = datetime.now(settings.timezone)
        await catch_up(ctx["redis"], settings, registry, now, served=served)

    return start_then_catch_up


def _logging_first(settings: Settings, on_startup: Any) -> Any:
    async def configure_then_start(ctx: dict[str, Any]) -> None:
        configure_logging(settings)  # after arq's CLI set up its own, which this replaces
        await check_redis(ctx["redis"], settings, "worker")  # may refuse to start
        await on_startup(ctx)

    return configure_then_start


def build_worker_settings(settings: Settings, registry: Registry = REGISTRY) -> type:
    """A ``WorkerSettings`` class (the CLI's entry point); arq reads only its own ``__dict__``.

    Only this entry point configures logging and checks Redis's eviction policy and
    persistence (service.store.redis_checks), so in-process workers in tests do neither.
    ``registry`` is jobs/registry.py's; the bench's worker (bench/worker.py) adds its own jobs.
    """
    options = worker_options(settings, registry)
    options["on_startup"] = _logging_first(settings, options["on_startup"])
    return type("WorkerSettings", (), options)
