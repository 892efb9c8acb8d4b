"""Replays: a finished job sent again as a new job, each linked to the other.

A replayable job (``Job(replayable=True)``: deliver_webhook) keeps its arguments in its
tracking hash once it has finished, as arq's result keeps none: at most
REPLAY_MAX_ARGUMENT_BYTES of JSON, else nothing (such a job cannot be replayed). A replay's
tracking hash names its original (``replay_of``); the original lists its replays, newest
first. Both expire with the jobs' other records (JOB_RESULT_TTL).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from service.store import keys

KEPT_FIELD = "replay_kwargs"  # in the tracking hash (keys.job_meta)
REPLAYS_KEPT = 20  # ids a job's page and status list
FINISHED = ("success", "failure")  # delivered, answered or not: what a replay may re-send


def kept_arguments(kwargs: dict[str, Any], max_bytes: int) -> str | None:
    """The arguments as kept for a replay, or None when they are larger than ``max_bytes``."""
    text = json.dumps(kwargs, separators=(",", ":"), ensure_ascii=False)
    return text if len(text.encode()) <= max_bytes else None


@dataclass(frozen=True, slots=True)
class Original:
    """What a replay needs of the job it re-sends."""

    function: str | None
    outcome: str | None
    kwargs: dict[str, Any] | None  # None: nothing kept (too large, or not replayable)
    size: int = 0  # bytes of the kept arguments (JSON)


async def original(redis: Redis, job_id: str) -> Original:
    """What ``job_id``'s tracking hash says a replay needs (all None for an unknown job)."""
    fields = ["function", "outcome", KEPT_FIELD]
    raw = await redis.hmget(keys.job_meta(job_id), fields)  # type: ignore[misc]
    function, outcome, kept = (None if value is None else value.decode() for value in raw)
    if kept is None:
        return Original(function, outcome, None)
    try:
        value = json.loads(kept)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        return Original(function, outcome, None)
    return Original(function, outcome, value, len(kept.encode()))


async def link(redis: Redis, original_id: str, replay_id: str, *, ttl: int) -> None:
    """Record that ``replay_id`` replays ``original_id``, on both, in one transaction."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.job_meta(replay_id), "replay_of", original_id)
        pipe.expire(keys.job_meta(replay_id), ttl)
        pipe.lpush(keys.job_replays(original_id), replay_id)
        pipe.ltrim(keys.job_replays(original_id), 0, REPLAYS_KEPT - 1)
        pipe.expire(keys.job_replays(original_id), ttl)
        await pipe.execute()
