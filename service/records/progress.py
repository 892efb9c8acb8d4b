"""The progress helper jobs find on ``ctx["progress"]``: ``await ctx["progress"]("resized")``.

Each step is stored in the job's tracking hash (so a late viewer's snapshot shows it) and
published on the job's event channel (so an open dashboard shows it at once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from service.records import events
from service.store import keys


@dataclass(frozen=True, slots=True)
class Progress:
    """Reports one job's steps; built per attempt by the tracking wrapper."""

    redis: Redis
    job_id: str
    ttl: int

    async def __call__(
        self, step: str, *, done: int | None = None, total: int | None = None
    ) -> None:
        data: dict[str, Any] = {"step": step, "done": done, "total": total}
        key = keys.job_meta(self.job_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, "progress", json.dumps(data))
            pipe.expire(key, self.ttl)
            pipe.publish(
                keys.job_events(self.job_id, keys.database_of(pipe)),
                events.encode("progress", data),
            )
            await pipe.execute()


def stored_progress(meta: dict[str, str]) -> dict[str, Any] | None:
    """The last reported step from a tracking hash, if the job reported any."""
    raw = meta.get("progress")
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
