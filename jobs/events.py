"""The log_event job: fire and forget, one structured log line per event."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from pydantic import AfterValidator, Discriminator, StringConstraints, Tag

from service.runtime import Job, JobContext, JobInput, no_control_characters

logger = logging.getLogger("jobservice.events")

# A plain string, as ``log_event("User logged in")`` in the lesson this service replaces: one
# line of text (the log line it lands in must stay one line, and say what it shows)
EventText = Annotated[
    str, StringConstraints(min_length=1, max_length=1000), AfterValidator(no_control_characters)
]


def _kind(value: object) -> str | None:
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, dict) else None


# told apart by type, so a 400 speaks of the one the client sent ("event.string: ...")
Event = Annotated[
    Annotated[dict[str, Any], Tag("object")] | Annotated[EventText, Tag("string")],
    Discriminator(
        _kind,
        custom_error_type="event_type",
        custom_error_message="must be a JSON object or a string",
    ),
]


class LogEvent(JobInput):
    event: Event


async def log_event(ctx: JobContext, *, event: dict[str, Any] | str) -> None:
    """Log an event, an object or a string, as one JSON line (fire and forget: no result)."""
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
