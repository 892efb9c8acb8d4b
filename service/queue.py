"""Enqueueing jobs by name: the only way the web app hands work to the worker."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from arq.connections import ArqRedis


class JobName(StrEnum):
    """Names the worker registers its functions under (service.worker)."""

    SEND_EMAIL = "send_email"
    SEND_WELCOME_EMAIL = "send_welcome_email"
    PROCESS_IMAGE = "process_image"
    DELIVER_WEBHOOK = "deliver_webhook"
    LOG_EVENT = "log_event"
    DAILY_REPORT = "daily_report"
    CLEANUP_OLD_FILES = "cleanup_old_files"


class EnqueueError(RuntimeError):
    """arq refused the job (its id already exists), which a fresh uuid4 makes a bug."""


async def enqueue(redis: ArqRedis, function: JobName, **kwargs: Any) -> str:
    """Queue ``function(**kwargs)`` under a fresh, unguessable id and return that id."""
    job_id = uuid.uuid4().hex
    job = await redis.enqueue_job(function.value, _job_id=job_id, **kwargs)
    if job is None:
        raise EnqueueError(f"job id {job_id} already exists")
    return job_id
