"""The log_event job: fire and forget, one structured log line per event."""

from __future__ import annotations

import json
import logging
from typing import Any

from service.runtime.context import JobContext

logger = logging.getLogger("jobservice.events")


async def log_event(ctx: JobContext, *, event: dict[str, Any]) -> None:
    """Log the event as one JSON line; nothing is kept (the function keeps no result)."""
    logger.info(json.dumps({"job_id": ctx["job_id"], "event": event}, sort_keys=True))
