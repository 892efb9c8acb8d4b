"""The typed ctx every job receives: arq's own fields plus the resources opened at start-up."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, NotRequired, TypedDict

import aiohttp
from arq.connections import ArqRedis

from service.observability.metrics import JobMetrics
from service.records.progress import Progress
from service.store.database import Database
from settings import Settings

if TYPE_CHECKING:
    from jobs.mail.smtp_pool import SmtpPool


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Where and how to send mail; built once from settings in the worker's start-up."""

    host: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool
    timeout: float
    sender: str

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            use_tls=settings.smtp_tls,
            start_tls=settings.smtp_starttls,
            timeout=settings.smtp_timeout,
            sender=settings.mail_from,
        )


class JobContext(TypedDict):
    """What arq passes as ``ctx``; the worker's on_startup fills the resource fields."""

    redis: ArqRedis  # arq's pool, JSON-serializing
    settings: Settings
    http: aiohttp.ClientSession  # shared by all HTTP-bound jobs
    executor: ThreadPoolExecutor  # for Pillow and file walks, off the event loop
    db: Database
    smtp: SmtpConfig
    smtp_pool: SmtpPool  # open connections to the SMTP server, reused across emails
    progress: Progress  # set per attempt by service.worker.tracking: await ctx["progress"]("step")
    metrics: JobMetrics  # this worker's Prometheus counters (service.observability.metrics)
    job_id: str  # set by arq per job
    job_try: int  # 1 on the first attempt
    enqueue_time: datetime
    score: int
    # set by service.engine.loop: gives the job's place among max_jobs to the next job
    free_slot: NotRequired[Callable[[], None]]
    # set by service.worker.tracking: no attempt of this job id has started before this one, so
    # there is no earlier run's record (an email's "sent" marker, say) to look for
    first_start: NotRequired[bool]
    # set by service.worker.tracking when the attempt's task was cancelled (time limit, shutdown)
    attempt_interrupted: NotRequired[bool]
