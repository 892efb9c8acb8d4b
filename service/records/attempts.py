"""Every attempt of a job, kept as a short list beside its tracking hash.

The tracking wrapper opens an attempt when a run starts and closes it with its outcome. An
attempt that was never closed (its worker died) is closed as ``interrupted`` by the next
attempt, so the history has no holes even after a SIGKILL.
"""

from __future__ import annotations

import json
from typing import Any, Literal, NotRequired, TypedDict

from redis.asyncio import Redis

from service.observability.json_text import encoder
from service.store import keys

Outcome = Literal["success", "retry", "failure", "interrupted", "cancelled", "timeout"]

LOST_ATTEMPT = "the worker stopped during this attempt"

# every attempt writes one entry; a delivery's receiver text in it may be any JSON value
_ENCODE = encoder(default=None)


class Attempt(TypedDict):
    """One attempt as stored and as the status API shows it (times in ms since the epoch)."""

    run: int  # 1, then +1 each time the job is re-queued from the failed-jobs list
    attempt: int  # arq's try number within the run
    started_at: int
    finished_at: int | None
    duration_ms: int | None
    outcome: Outcome
    error: str | None
    # what the attempt's delivery got back, when the job tells (a webhook's ledger entry)
    delivery: NotRequired[dict[str, Any]]


def make_attempt(
    *,
    run: int,
    attempt: int,
    started_at: int,
    finished_at: int | None,
    outcome: Outcome,
    error: str | None = None,
    delivery: dict[str, Any] | None = None,
) -> Attempt:
    duration = None if finished_at is None else max(finished_at - started_at, 0)
    entry = Attempt(
        run=run,
        attempt=attempt,
        started_at=started_at,
        finished_at=finished_at,
        duration_ms=duration,
        outcome=outcome,
        error=error or None,
    )
    if delivery is not None:
        entry["delivery"] = delivery
    return entry


def encode(attempt: Attempt) -> str:
    """An attempt as stored in the history list (UTF-8: a receiver's text in a ledger entry
    costs its own size, not six bytes a character)."""
    return _ENCODE(attempt)


async def record(redis: Redis, job_id: str, attempt: Attempt, *, keep: int, ttl: int) -> None:
    """Append ``attempt``; only the latest ``keep`` attempts stay."""
    key = keys.job_attempts(job_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.rpush(key, encode(attempt))
        pipe.ltrim(key, -keep, -1)
        pipe.expire(key, ttl)
        await pipe.execute()


async def relabel_last(redis: Redis, job_id: str, outcome: Outcome, error: str) -> None:
    """Correct the latest attempt's outcome once arq tells more (e.g. a time limit)."""
    key = keys.job_attempts(job_id)
    raw = await redis.lindex(key, -1)  # type: ignore[misc]
    last = _parse(raw) if raw is not None else None
    if last is None:
        return
    last["outcome"] = outcome
    last["error"] = error
    entry = json.dumps(last, separators=(",", ":"), ensure_ascii=False)
    await redis.lset(key, -1, entry)  # type: ignore[misc]


def _parse(raw: bytes | str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_history(raw_items: list[bytes]) -> list[dict[str, Any]]:
    """Stored attempts, oldest first; unreadable entries are skipped."""
    return [item for raw in raw_items if (item := _parse(raw)) is not None]
