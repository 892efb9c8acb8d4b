"""The typed ctx every job receives: arq's own fields plus the resources opened at start-up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, NotRequired, TypedDict

import aiohttp
from arq.connections import ArqRedis

from service.observability.metrics import JobMetrics
from service.records.progress import Progress
from service.records.tallies import Tallies
from service.store.database import Database
from service.store.scripts import ScriptCall
from service.store.storage import Storage
from settings import Settings


class JobContext(TypedDict):
    """What arq passes as ``ctx``; the worker's start-up fills the resource fields, the
    tracking wrapper the per-attempt ones (service/worker/)."""

    redis: ArqRedis  # the worker's auto-pipelined client, JSON-serializing
    settings: Settings
    http: aiohttp.ClientSession  # shared by all HTTP-bound jobs
    executor: ThreadPoolExecutor  # for Pillow and file walks, off the event loop
    db: Database  # the users database, SQLite or PostgreSQL (DATABASE_URL)
    storage: Storage  # uploads, thumbnails, reports: DATA_DIR folders or an S3 bucket
    metrics: JobMetrics  # this worker's Prometheus counters
    tallies: Tallies  # the overview graphs' counts, written once a second
    job_id: str  # set by arq per job
    job_try: int  # 1 on the first attempt
    enqueue_time: datetime
    score: int
    progress: Progress  # per attempt: await ctx["progress"]("step", done=1, total=3)
    # per attempt: seconds until the job may run again elsewhere should this worker die (its
    # time limit + JOB_LOCK_MARGIN); a lock the job takes should expire after as long
    lease: float
    # set by service.engine: gives the job's place among max_jobs to the next job; returns
    # an event to wait for before writing the attempt's bookkeeping, or None
    free_slot: NotRequired[Callable[[], asyncio.Event | None]]
    # set (to None) by service.engine: a job wrapper's last write, sent with the engine's own
    finish_with: NotRequired[ScriptCall | None]
    # set by the tracking wrapper when the attempt's task was cancelled (time limit, shutdown)
    attempt_interrupted: NotRequired[bool]
    # set by the tracking wrapper: the attempt's arguments, for a failure arq decides itself
    # (a time limit), as arq's stored result keeps none (service.engine.loop)
    arguments: NotRequired[tuple[tuple[Any, ...], dict[str, Any]]]
    # set by a job, per attempt: what this attempt's delivery got back (a webhook's answer:
    # status, duration, headers, the start of its body), kept masked in its history entry
    delivery: NotRequired[dict[str, Any]]
    # set by the observing wrapper: the id of the request that queued the job, if any
    request_id: NotRequired[str]
