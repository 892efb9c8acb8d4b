"""Everything the dashboard's job page shows about one job, read in one go."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from service.engine.arq_api import job_key_prefix
from service.observability.masking import masked
from service.observability.origin import REQUEST_ID_KWARG
from service.records import arguments
from service.records.progress import stored_progress
from service.records.status import Declared, task_status
from service.store import keys
from service.store.serialization import deserialize


@dataclass(frozen=True, slots=True)
class JobView:
    status: dict[str, Any]  # the /task-status document
    args: list[Any] = field(default_factory=list)  # masked
    kwargs: dict[str, Any] = field(default_factory=dict)  # masked
    progress: dict[str, Any] | None = None
    request_id: str | None = None  # of the request that queued it, to find its log lines
    attempts: list[dict[str, Any]] = field(default_factory=list)  # oldest first


def _stored_arguments(
    queued: bytes | None, meta: dict[str, str]
) -> tuple[list[Any], dict[str, Any]]:
    """Masked: a queued job's from arq's job, a finished one's from the bounded copy its
    tracking hash keeps (service.records.arguments; arq's result keeps none)."""
    if queued is None:
        kept = arguments.decode(meta.get("arguments"))
        return ([], {}) if kept is None else (kept.args, kept.kwargs)
    try:
        data = deserialize(queued)
    except (ValueError, TypeError):
        return [], {}
    return list(masked(list(data.get("a") or []))), dict(masked(dict(data.get("k") or {})))


def _attempts(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The finished attempts the status API lists, and the one running now, if any."""
    history = status.get("history")
    found = (
        [item for item in history if isinstance(item, dict)] if isinstance(history, list) else []
    )
    if status["status"] == "STARTED":
        found.append(
            {
                "attempt": status["attempts"],
                "started_at": status["started_at"],
                "outcome": "started",
            }
        )
    return found


async def job_view(
    redis: Redis, queues: str | Sequence[str], job_id: str, declared: Declared
) -> JobView | None:
    """The job page's content; ``queues``: every sorted set the job may wait in."""
    status = await task_status(redis, queues, job_id, declared)
    if status is None:
        return None
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(job_key_prefix + job_id)
        pipe.hgetall(keys.job_meta(job_id))
        queued, raw_meta = await pipe.execute()
    meta = {key.decode(): value.decode() for key, value in raw_meta.items()}
    args, kwargs = _stored_arguments(queued, meta)
    request_id = kwargs.pop(REQUEST_ID_KWARG, None) or meta.get("request_id")
    return JobView(
        status=status,
        args=args,
        kwargs=kwargs,
        progress=stored_progress(meta),
        request_id=str(request_id) if request_id else None,
        attempts=_attempts(status),
    )
