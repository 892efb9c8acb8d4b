"""Cancelling jobs: a queued job is removed at once, a running one is aborted through arq.

A queued job is taken off the queue and given a stored "cancelled" result in one atomic step,
so no worker can start it half way through (the step also touches the job's in-progress key,
which makes a worker that is just claiming it back off). A running job is added to arq's
abort set; the worker (``allow_abort_jobs``) cancels its task on its next poll, and the
tracking wrapper records the attempt as ``cancelled``. Either way the job's tracking hash
says who asked and when, and the status API shows ``CANCELLED``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from enum import StrEnum

from redis.asyncio import Redis

from service.engine.arq_api import (
    DeserializationError,
    abort_jobs_ss,
    deserialize_job_raw,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
    serialize_result,
)
from service.records import events
from service.store import keys
from service.store.scripts import LuaScript
from service.store.serialization import deserialize, serialize

CANCEL_REASON = "cancelled by request"


class CancelOutcome(StrEnum):
    CANCELLED = "CANCELLED"  # it was queued; it will never run
    CANCELLING = "CANCELLING"  # it is running; the worker stops it on its next poll


class JobNotFoundError(LookupError):
    """No job with this id is queued, running or remembered."""


class JobFinishedError(Exception):
    """The job already finished (succeeded, failed or was cancelled): nothing to cancel."""


# KEYS: job, in-progress, result, retry, meta, abort set, then every queue it may wait in.
# ARGV: job id, the job bytes as read, cancelled result bytes, now ms, reason, meta ttl.
# Returns 'queued' (cancelled now), 'running' (abort requested), 'finished', 'missing' or
# 'changed' (the job moved on between the read and this script: read again).
_CANCEL = LuaScript(
    """
local job_key, progress_key, result_key, retry_key, meta, aborts =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local job_id, job, result, now, reason, ttl =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
if redis.call('exists', result_key) == 1 then return 'finished' end
local current = redis.call('get', job_key)
if not current then return 'missing' end
redis.call('hset', meta, 'cancel_requested_at', now, 'cancel_reason', reason)
redis.call('expire', meta, ttl)
if redis.call('exists', progress_key) == 1 then
  redis.call('zadd', aborts, now, job_id)
  return 'running'
end
if current ~= job then return 'changed' end
for q = 7, #KEYS do redis.call('zrem', KEYS[q], job_id) end
redis.call('del', job_key, retry_key)
redis.call('psetex', progress_key, 2000, 'cancelled')
redis.call('set', result_key, result, 'EX', ttl)
redis.call('hset', meta, 'outcome', 'cancelled', 'finished_at', now)
return 'queued'
"""
)

MAX_READS = 5


def _cancelled_result(job_id: str, job: bytes, reason: str, now: int, queue_name: str) -> bytes:
    try:
        function, args, kwargs, job_try, enqueue_time_ms = deserialize_job_raw(
            job, deserializer=deserialize
        )
    except DeserializationError:  # not ours: cancel it all the same, with what is known
        function, args, kwargs, job_try, enqueue_time_ms = "<unknown>", (), {}, 0, now
    result = serialize_result(
        function,
        args,
        kwargs,
        job_try or 0,
        enqueue_time_ms,
        False,
        asyncio.CancelledError(reason),
        now,
        now,
        f"{job_id}:{function}",
        queue_name,
        job_id=job_id,
        serializer=serialize,
    )
    if result is None:
        raise ValueError(f"job {job_id} could not be stored as cancelled")
    return result


async def cancel_job(
    redis: Redis,
    queues: str | Sequence[str],
    job_id: str,
    *,
    result_ttl: int,
    reason: str = CANCEL_REASON,
) -> CancelOutcome:
    """Cancel ``job_id`` if it is queued or running, in whichever of ``queues`` (every
    sorted set it may wait in, the default queue's first: service.engine.queues) it is.

    Raises :class:`JobNotFoundError` for an unknown id and :class:`JobFinishedError` for a
    job that already finished.
    """
    queue_keys = [queues] if isinstance(queues, str) else list(queues)
    for _ in range(MAX_READS):
        job = await redis.get(job_key_prefix + job_id)
        now = int(time.time() * 1000)
        result = b"" if job is None else _cancelled_result(job_id, job, reason, now, queue_keys[0])
        answer = await _CANCEL.run(
            redis,
            [
                job_key_prefix + job_id,
                in_progress_key_prefix + job_id,
                result_key_prefix + job_id,
                retry_key_prefix + job_id,
                keys.job_meta(job_id),
                abort_jobs_ss,
                *queue_keys,
            ],
            [job_id, job or b"", result, now, reason, result_ttl],
        )
        match answer.decode() if isinstance(answer, bytes) else answer:
            case "queued":
                await events.publish(
                    redis, job_id, "status", {"status": "CANCELLED", "error": reason}
                )
                return CancelOutcome.CANCELLED
            case "running":
                return CancelOutcome.CANCELLING
            case "finished":
                raise JobFinishedError(job_id)
            case "missing":
                if await redis.hexists(keys.job_meta(job_id), "outcome"):  # type: ignore[misc]
                    raise JobFinishedError(job_id)  # a job that keeps no result
                raise JobNotFoundError(job_id)
    raise RuntimeError(f"job {job_id} kept changing while it was being cancelled")
