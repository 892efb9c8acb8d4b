"""The failed-jobs list: every job that failed for good, kept so it can be seen and re-queued.

Stored as a sorted set of ids scored by failure time plus a hash of entries, both trimmed on
every write (at most ``DEAD_LETTER_MAX_JOBS`` entries, none older than ``DEAD_LETTER_MAX_AGE``
seconds). Running a failed job again is the queue's business (service.queue.retry).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis

from service.engine.arq_api import job_key_prefix, result_key_prefix
from service.records.times import now_ms
from service.store import keys
from service.store.scripts import LuaScript
from service.store.serialization import JobError, describe_exception, deserialize

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
    # the arguments were larger than DEAD_LETTER_MAX_ARGUMENT_BYTES: args and kwargs are a
    # cut copy (service.records.arguments), shown but never run again
    truncated: bool = False

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
            truncated=bool(data.get("truncated")),
        )


@dataclass(frozen=True, slots=True)
class DeadJobPage:
    jobs: list[DeadJob]
    total: int


class NotFailedError(Exception):
    """The job exists but is not in the failed-jobs list (it did not fail, or aged out)."""


class ArgumentsCutError(Exception):
    """The failed job's arguments were too large to keep whole, so it cannot run again."""


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


async def add(redis: Redis, job: DeadJob, *, max_jobs: int, max_age: float) -> None:
    """Keep ``job`` in the list (replacing an older entry for the same id)."""
    oldest = now_ms() - int(max_age * 1000)
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
        truncated=entry.truncated,
        attempts=int(result.get("t") or entry.attempts),
        reason=f"{reason} ({LAST_ATTEMPT_LOST})",
        failed_at=int(result.get("ft") or now_ms()),
        enqueued_at=entry.enqueued_at,
    )


async def page(
    redis: Redis,
    *,
    offset: int,
    limit: int,
    max_age: float,
    max_jobs: int,
) -> DeadJobPage:
    """Failed jobs, newest first; entries past ``max_age`` seconds are dropped first."""
    await settle_expected(redis, max_jobs=max_jobs, max_age=max_age)
    oldest = now_ms() - int(max_age * 1000)
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
