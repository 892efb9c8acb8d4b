"""A job's live events: state changes and progress, published on its own Redis channel.

The tracking wrapper and the progress helper publish; ``GET /jobs/{id}/events`` subscribes
first and reads a snapshot second, so no event can fall between the two.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from service.observability.json_text import encoder
from service.store import keys

EventKind = Literal["status", "progress", "graphs", "breakers"]
# graphs: new counts (records.tallies); breakers: one opened or closed (records.breakers)


# every attempt publishes two: compact, anything else written as its str()
_ENCODE = encoder(default=str)


def encode(kind: EventKind, data: dict[str, Any]) -> str:
    return _ENCODE({"kind": kind, "data": data})


def decode(raw: bytes | str) -> tuple[EventKind, dict[str, Any]] | None:
    """The event in a channel message, or None for anything that is not one of ours."""
    try:
        message = json.loads(raw)
        kind, data = message["kind"], message["data"]
    except (ValueError, KeyError, TypeError):
        return None
    if kind not in ("status", "progress", "graphs", "breakers") or not isinstance(data, dict):
        return None
    return kind, data


def publish_status(pipe: Pipeline, job_id: str, data: dict[str, Any]) -> None:
    """Queue, on ``pipe``, a state change for the job's stream (the live overview listens to
    every job's channel through a pattern, so no second message is needed)."""
    pipe.publish(keys.job_events(job_id, keys.database_of(pipe)), encode("status", data))


async def publish(redis: Redis, job_id: str, kind: EventKind, data: dict[str, Any]) -> None:
    await redis.publish(keys.job_events(job_id, keys.database_of(redis)), encode(kind, data))
