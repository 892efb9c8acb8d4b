"""A job's status as clients see it, derived from arq's keys and the tracking hash.

arq has no "failed" state (a finished job is just "complete"), so the stored result's
success flag decides SUCCESS or FAILURE, and a queued job that already had an attempt is
RETRY, waiting for its next one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from service.engine.arq_api import (
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from service.records.attempts import parse_history
from service.records.times import iso_from_ms
from service.store import keys
from service.store.serialization import JobError, describe_exception, deserialize

JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9:_.\-]{1,200}")


class TaskState(StrEnum):
    PENDING = "PENDING"
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class Declared:
    """What the job declarations (jobs/registry.py) say per function that a status shows:
    how many tries it gets and its time limit, in seconds. Built once per process."""

    max_tries: Mapping[str, int] = field(default_factory=dict)
    time_limits: Mapping[str, float] = field(default_factory=dict)


def time_limit_reason(seconds: float | None = None) -> str:
    """Why a job that ran past its time limit failed; with the limit when it is known."""
    limit = "its time limit" if seconds is None else f"its time limit ({seconds:g} s)"
    return f"TimeoutError: the job ran past {limit} and was cancelled"


def _failure_reason(stored: Any, meta: dict[str, str], limit: float | None) -> str:
    reason = describe_exception(stored) if isinstance(stored, BaseException) else str(stored)
    if isinstance(stored, JobError) and stored.type_name == "TimeoutError" and not stored.message:
        # the worker records the limit it applied; until it has, the declared one
        recorded = meta.get("last_error", "")
        reason = recorded if recorded.startswith("TimeoutError") else time_limit_reason(limit)
    last = meta.get("last_error")
    if isinstance(stored, JobError) and stored.type_name == "JobExecutionFailed" and last:
        # arq's "max N retries exceeded" hides why the attempts failed; say both
        reason = f"{reason} (last error: {last})"
    return reason


def _from_result(
    job_id: str, raw: bytes, meta: dict[str, str], declared: Declared
) -> dict[str, Any]:
    data = deserialize(raw)
    status: dict[str, Any] = {
        "task_id": job_id,
        "function": data["f"],
        "status": TaskState.SUCCESS if data["s"] else TaskState.FAILURE,
        "attempts": data["t"],
        "enqueued_at": iso_from_ms(data["et"]),
        "started_at": iso_from_ms(data["st"]),
        "finished_at": iso_from_ms(data["ft"]),
    }
    if data["s"]:
        status["result"] = data["r"]
    elif _was_cancelled(data["r"], meta):
        status["status"] = TaskState.CANCELLED
        status["error"] = meta.get("cancel_reason") or "cancelled"
    else:
        limit = declared.time_limits.get(keys.job_of_cron(str(data["f"])))
        status["error"] = _failure_reason(data["r"], meta, limit)
    return status


def _was_cancelled(stored: Any, meta: dict[str, str]) -> bool:
    """Aborted through DELETE /jobs/{id} (not a shutdown or a time limit)."""
    aborted = isinstance(stored, JobError) and stored.type_name == "CancelledError"
    return aborted and "cancel_requested_at" in meta


def _from_queue(
    job_id: str,
    raw: bytes,
    meta: dict[str, str],
    in_progress: bool,
    tries: int,
    score: float | None,
) -> dict[str, Any]:
    data = deserialize(raw)
    attempts = max(tries, int(meta.get("attempts", 0)))
    if in_progress:
        state = TaskState.STARTED
    elif attempts > 0:
        state = TaskState.RETRY
    else:
        state = TaskState.PENDING
    status: dict[str, Any] = {
        "task_id": job_id,
        "function": data["f"],
        "status": state,
        "attempts": attempts,
        "enqueued_at": iso_from_ms(data["et"]),
        "started_at": iso_from_ms(meta.get("started_at")) if attempts else None,
        "finished_at": None,
        "result": None,
    }
    if "cancel_requested_at" in meta:
        status["cancel_requested_at"] = iso_from_ms(meta["cancel_requested_at"])
    if state is not TaskState.STARTED and meta.get("waiting_for"):
        # held back by its destination's circuit breaker (service.worker.breakers) or by a
        # rate limit (service.worker.rate_gate): not run, not an attempt; cleared as it is
        # let through
        status["waiting_for"] = meta["waiting_for"]
    if state is TaskState.RETRY:
        status["error"] = meta.get("last_error") or "attempt interrupted"
        status["next_attempt_at"] = iso_from_ms(int(score)) if score is not None else None
    elif state is TaskState.PENDING and score is not None:
        status["scheduled_for"] = iso_from_ms(int(score))
    return status


def _from_meta(job_id: str, meta: dict[str, str]) -> dict[str, Any]:
    """For jobs that keep no result (log_event): what the tracking hash remembers."""
    ok = meta.get("outcome") == "success"
    if meta.get("outcome") == "cancelled":
        state = TaskState.CANCELLED
    else:
        state = TaskState.SUCCESS if ok else TaskState.FAILURE
    status: dict[str, Any] = {
        "task_id": job_id,
        "function": meta.get("function"),
        "status": state,
        "attempts": int(meta.get("attempts", 0)),
        "enqueued_at": None,
        "started_at": iso_from_ms(meta.get("started_at")),
        "finished_at": iso_from_ms(meta.get("finished_at")),
    }
    if ok:
        status["result"] = None
    else:
        status["error"] = meta.get("last_error") or "failed"
    return status


async def task_status(
    redis: Redis, queues: str | Sequence[str], job_id: str, declared: Declared
) -> dict[str, Any] | None:
    """The status document for ``job_id``, or None when no such job is known; ``queues``
    are every sorted set it may wait in (service.engine.queues.QueueLayout.all_keys)."""
    queue_keys = [queues] if isinstance(queues, str) else list(queues)
    if not JOB_ID_PATTERN.fullmatch(job_id):
        return None
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(result_key_prefix + job_id)
        pipe.get(job_key_prefix + job_id)
        pipe.exists(in_progress_key_prefix + job_id)
        pipe.get(retry_key_prefix + job_id)
        pipe.hgetall(keys.job_meta(job_id))
        pipe.lrange(keys.job_attempts(job_id), 0, -1)
        pipe.lrange(keys.job_replays(job_id), 0, -1)
        for key in queue_keys:
            pipe.zscore(key, job_id)
        replies = await pipe.execute()
    result_raw, job_raw, in_progress, tries, meta_raw, history, replays = replies[:7]
    score = next((found for found in replies[7:] if found is not None), None)
    meta = {k.decode(): v.decode() for k, v in meta_raw.items()}
    status = _status(
        job_id, result_raw, job_raw, meta, bool(in_progress), int(tries or 0), score, declared
    )
    if status is not None:
        function = status["function"]
        tries = declared.max_tries.get(keys.job_of_cron(str(function)))
        if tries is not None:
            status["max_tries"] = tries
        status["history"] = [_attempt_times(item) for item in parse_history(history)]
        _add_replay_links(status, meta, replays)
    return status


def _add_replay_links(status: dict[str, Any], meta: dict[str, str], replays: list[bytes]) -> None:
    """The job this one replays, and this one's replays (newest first), when there are any."""
    if meta.get("replay_of"):
        status["replay_of"] = meta["replay_of"]
    if replays:
        status["replays"] = [raw.decode() for raw in replays]


def _attempt_times(item: dict[str, Any]) -> dict[str, Any]:
    """A stored attempt with its times as ISO strings, like the rest of the document."""
    return {
        **item,
        "started_at": iso_from_ms(item.get("started_at")),
        "finished_at": iso_from_ms(item.get("finished_at")),
    }


def _status(
    job_id: str,
    result_raw: bytes | None,
    job_raw: bytes | None,
    meta: dict[str, str],
    in_progress: bool,
    tries: int,
    score: float | None,
    declared: Declared,
) -> dict[str, Any] | None:
    try:
        if result_raw is not None:
            return _from_result(job_id, result_raw, meta, declared)
        if job_raw is not None:
            return _from_queue(job_id, job_raw, meta, in_progress, tries, score)
    except (ValueError, KeyError, TypeError):
        return _unreadable(job_id)
    if meta.get("outcome"):
        return _from_meta(job_id, meta)
    return None


def _unreadable(job_id: str) -> dict[str, Any]:
    """A job whose stored form is not ours (e.g. written by another client): the worker
    refuses to run it too, so it can only end as a failure."""
    return {
        "task_id": job_id,
        "function": None,
        "status": TaskState.FAILURE,
        "attempts": 0,
        "enqueued_at": None,
        "started_at": None,
        "finished_at": None,
        "error": "the stored job could not be read: it is not in this service's JSON format",
    }
