"""The failed-jobs list: every job that failed for good, kept so it can be seen and re-queued.

Stored as a sorted set of ids scored by failure time plus a hash of entries, both trimmed on
every write (at most ``DEAD_LETTER_MAX_JOBS`` entries, none older than ``DEAD_LETTER_MAX_AGE``
seconds). A retry keeps the job's id: the client's ``task_id`` (and any Idempotency-Key that
points at it) follows the new run; arq's stored failure for that id is deleted so arq accepts
the id again, while the attempt history is kept and the new run's attempts are numbered
``run: 2, attempt: 1...``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from arq.constants import (
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import serialize_job
from redis.asyncio import Redis

from service.store import keys
from service.store.scripts import LuaScript
from service.store.serialization import JobError, describe_exception, deserialize, serialize

# A re-queued job may wait this long for a worker before arq drops it (arq's own default).
RETRIED_JOB_EXPIRES_MS = 86_400_000
DEFAULT_MAX_JOBS = 10_000  # DEAD_LETTER_MAX_JOBS's default
LAST_ATTEMPT_LOST = "the worker stopped during the last attempt"


@dataclass(frozen=True, slots=True)
class DeadJob:
    """A job that failed for good, with what is needed to run it again."""

    job_id: str
    function: str
    args: list[Any]
    kwargs: dict[str, Any]
    attempts: int
    reason: str
    failed_at: int  # ms since the epoch
    enqueued_at: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> DeadJob:
        data = json.loads(raw)
        return cls(
            job_id=str(data["job_id"]),
            function=str(data["function"]),
            args=list(data.get("args") or []),
            kwargs=dict(data.get("kwargs") or {}),
            attempts=int(data.get("attempts", 0)),
            reason=str(data.get("reason", "")),
            failed_at=int(data["failed_at"]),
            enqueued_at=data.get("enqueued_at"),
        )


@dataclass(frozen=True, slots=True)
class DeadJobPage:
    jobs: list[DeadJob]
    total: int


class NotFailedError(Exception):
    """The job exists but is not in the failed-jobs list (it did not fail, or aged out)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


# Add one entry and drop entries past the age limit, then the oldest past the size limit.
_ADD = LuaScript(
    """
local zset, entries, expected = KEYS[1], KEYS[2], KEYS[3]
local job_id, failed_at, body = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local max_jobs, oldest = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('zadd', zset, failed_at, job_id)
redis.call('hset', entries, job_id, body)
redis.call('hdel', expected, job_id)
for _, old in ipairs(redis.call('zrangebyscore', zset, '-inf', '(' .. oldest)) do
  redis.call('hdel', entries, old)
end
redis.call('zremrangebyscore', zset, '-inf', '(' .. oldest)
local extra = redis.call('zcard', zset) - max_jobs
if extra > 0 then
  for _, old in ipairs(redis.call('zrange', zset, 0, extra - 1)) do
    redis.call('hdel', entries, old)
  end
  redis.call('zremrangebyrank', zset, 0, extra - 1)
end
return 1
"""
)

# Re-queue a failed job under its own id, atomically: only one caller wins a race.
# Returns 1 when queued, 0 when the job is not in the list, -1 when its id is in use.
_RETRY = LuaScript(
    """
local zset, entries, job_key, result_key, retry_key, progress_key, queue, meta, wake =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local job_id, job, score, expires_ms, ttl =
  ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if not redis.call('zscore', zset, job_id) then return 0 end
if redis.call('exists', job_key) == 1 or redis.call('exists', progress_key) == 1 then
  return -1
end
redis.call('del', result_key, retry_key)
redis.call('psetex', job_key, expires_ms, job)
redis.call('zadd', queue, score, job_id)
redis.call('lpush', wake, 1)  -- wake an idle worker, as service.queue.enqueue does
redis.call('ltrim', wake, 0, 0)
redis.call('pexpire', wake, 60000)
redis.call('zrem', zset, job_id)
redis.call('hdel', entries, job_id)
redis.call('hdel', meta, 'outcome', 'finished_at', 'last_error', 'retry_at', 'open_attempt',
  'attempts', 'started_at', 'cancel_requested_at', 'cancel_reason')
redis.call('hincrby', meta, 'requeued', 1)
redis.call('expire', meta, ttl)
return 1
"""
)


async def add(redis: Redis, job: DeadJob, *, max_jobs: int, max_age: float) -> None:
    """Keep ``job`` in the list (replacing an older entry for the same id)."""
    oldest = _now_ms() - int(max_age * 1000)
    await _ADD.run(
        redis,
        [keys.dead_letters(), keys.dead_letter_entries(), keys.dead_letter_expected()],
        [job.job_id, job.failed_at, job.to_json(), max_jobs, oldest],
    )


async def settle_expected(redis: Redis, *, max_jobs: int, max_age: float) -> None:
    """File the jobs arq failed after their last attempt was lost with its worker.

    arq fails such a job ("max retries exceeded") when it next picks it up, without running
    any hook, so the list looks for them whenever it is read.
    """
    expected: dict[bytes, bytes] = await redis.hgetall(keys.dead_letter_expected())  # type: ignore[misc]
    if not expected:
        return
    ids = [raw.decode() for raw in expected]
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.get(result_key_prefix + job_id)
            pipe.exists(job_key_prefix + job_id)
        found = await pipe.execute()
    for job_id, raw_entry, raw_result, queued in zip(
        ids, expected.values(), found[::2], found[1::2], strict=True
    ):
        if raw_result is None and queued:
            continue  # still queued or running
        failed = _lost_failure(raw_entry, raw_result)
        if failed is None:
            await redis.hdel(keys.dead_letter_expected(), job_id)  # type: ignore[misc]
        else:
            await add(redis, failed, max_jobs=max_jobs, max_age=max_age)


def _lost_failure(raw_entry: bytes, raw_result: bytes | None) -> DeadJob | None:
    """The entry to file, or None when the job did not fail (or is gone)."""
    if raw_result is None:
        return None
    try:
        result = deserialize(raw_result)
        entry = DeadJob.from_json(raw_entry)
    except (ValueError, KeyError, TypeError):
        return None
    error = result.get("r")
    if result.get("s") or (isinstance(error, JobError) and error.type_name == "CancelledError"):
        return None
    reason = describe_exception(error) if isinstance(error, BaseException) else str(error)
    return DeadJob(
        job_id=entry.job_id,
        function=entry.function,
        args=entry.args,
        kwargs=entry.kwargs,
        attempts=int(result.get("t") or entry.attempts),
        reason=f"{reason} ({LAST_ATTEMPT_LOST})",
        failed_at=int(result.get("ft") or _now_ms()),
        enqueued_at=entry.enqueued_at,
    )


async def page(
    redis: Redis,
    *,
    offset: int,
    limit: int,
    max_age: float,
    max_jobs: int = DEFAULT_MAX_JOBS,
) -> DeadJobPage:
    """Failed jobs, newest first; entries past ``max_age`` seconds are dropped first."""
    await settle_expected(redis, max_jobs=max_jobs, max_age=max_age)
    oldest = _now_ms() - int(max_age * 1000)
    await _drop_older_than(redis, oldest)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrevrange(keys.dead_letters(), offset, offset + limit - 1)
        pipe.zcard(keys.dead_letters())
        ids, total = await pipe.execute()
    if not ids:
        return DeadJobPage([], total)
    raw_entries = await redis.hmget(keys.dead_letter_entries(), ids)  # type: ignore[misc]
    jobs = [DeadJob.from_json(raw) for raw in raw_entries if raw is not None]
    return DeadJobPage(jobs, total)


async def _drop_older_than(redis: Redis, oldest_ms: int) -> None:
    old = await redis.zrangebyscore(keys.dead_letters(), "-inf", f"({oldest_ms}")
    if old:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.dead_letter_entries(), *old)
            pipe.zrem(keys.dead_letters(), *old)
            await pipe.execute()


async def get(redis: Redis, job_id: str) -> DeadJob | None:
    """The failed-jobs entry for ``job_id``, if it is in the list."""
    raw = await redis.hget(keys.dead_letter_entries(), job_id)  # type: ignore[misc]
    return DeadJob.from_json(raw) if raw is not None else None


async def discard(redis: Redis, job_id: str) -> bool:
    """Remove a job from the list without running it again; False when it was not there."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zrem(keys.dead_letters(), job_id)
        pipe.hdel(keys.dead_letter_entries(), job_id)
        removed, _ = await pipe.execute()
    return bool(removed)


async def retry(
    redis: Redis,
    queue_name: str,
    job_id: str,
    *,
    meta_ttl: int,
    max_jobs: int = DEFAULT_MAX_JOBS,
    max_age: float = 7 * 86_400,
) -> DeadJob:
    """Queue the failed job ``job_id`` again (same id, function and arguments).

    Raises :class:`NotFailedError` when the job is not in the failed-jobs list (including
    when another caller re-queued it first).
    """
    await settle_expected(redis, max_jobs=max_jobs, max_age=max_age)
    job = await get(redis, job_id)
    if job is None:
        raise NotFailedError(job_id)
    now = _now_ms()
    payload = serialize_job(
        job.function, tuple(job.args), job.kwargs, None, now, serializer=serialize
    )
    queued = await _RETRY.run(
        redis,
        [
            keys.dead_letters(),
            keys.dead_letter_entries(),
            job_key_prefix + job_id,
            result_key_prefix + job_id,
            retry_key_prefix + job_id,
            in_progress_key_prefix + job_id,
            queue_name,
            keys.job_meta(job_id),
            keys.wake(queue_name),
        ],
        [job_id, payload, now, RETRIED_JOB_EXPIRES_MS, meta_ttl],
    )
    if queued != 1:
        raise NotFailedError(job_id)
    return job
