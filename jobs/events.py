"""The log_event job: fire and forget, one structured log line per event."""

from __future__ import annotations

import json
import logging
from typing import Any

from service.runtime import Job, JobContext, JobInput

logger = logging.getLogger("jobservice.events")


class LogEvent(JobInput):
    event: dict[str, Any]


async def log_event(ctx: JobContext, *, event: dict[str, Any]) -> None:
    """Log an event as one JSON line (fire and forget: no result is kept)."""
    logger.info(json.dumps({"job_id": ctx["job_id"], "event": event}, sort_keys=True))


JOB = Job(
    name="log_event",
    run=log_event,
    input=LogEvent,
    time_limit=lambda settings: settings.email_job_timeout,
    keep_result=False,
    api=True,
    max_payload=lambda settings: settings.event_max_payload_bytes,
)
