"""Running a failed job again, from the failed-jobs list (service.records.failed_jobs).

A retry keeps the job's id: the client's ``task_id`` (and any Idempotency-Key that points at
it) follows the new run. arq's stored failure for that id is deleted so arq accepts the id
again, while the attempt history is kept and the new run's attempts are numbered
``run: 2, attempt: 1...``.
"""

from __future__ import annotations

from redis.asyncio import Redis

from service.engine.arq_api import (
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
    serialize_job,
)
from service.engine.queues import QueueLayout, queue_key, wake_key
from service.queue.enqueue import wake_a_worker
from service.records.failed_jobs import (
    ArgumentsCutError,
    DeadJob,
    NotFailedError,
    get,
    settle_expected,
)
from service.records.times import now_ms
from service.store import keys
from service.store.scripts import LuaScript
from service.store.serialization import serialize
from settings import Settings

# A re-queued job may wait this long for a worker before arq drops it (arq's own default).
RETRIED_JOB_EXPIRES_MS = 86_400_000

# Re-queue a failed job under its own id, atomically: only one caller wins a race.
# Returns 1 when queued, 0 when the job is not in the list, -1 when its id is in use.
_RETRY = LuaScript(
    f"""
local zset, entries, job_key, result_key, retry_key, progress_key, queue, meta =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local job_id, job, score, expires_ms, ttl =
  ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if not redis.call('zscore', zset, job_id) then return 0 end
if redis.call('exists', job_key) == 1 or redis.call('exists', progress_key) == 1 then
  return -1
end
redis.call('del', result_key, retry_key)
redis.call('psetex', job_key, expires_ms, job)
redis.call('zadd', queue, score, job_id)
{wake_a_worker(9)}
redis.call('zrem', zset, job_id)
redis.call('hdel', entries, job_id)
redis.call('hdel', meta, 'outcome', 'finished_at', 'last_error', 'retry_at', 'open_attempt',
  'attempts', 'started_at', 'cancel_requested_at', 'cancel_reason')
redis.call('hincrby', meta, 'requeued', 1)
redis.call('expire', meta, ttl)
return 1
"""
)


async def retry(
    redis: Redis,
    layout: QueueLayout,
    job_id: str,
    *,
    meta_ttl: int,
    max_jobs: int,
    max_age: float,
) -> DeadJob:
    """Queue the failed job ``job_id`` again (same id, function and arguments), on its
    function's queue at its declared priority (``layout``).

    Raises :class:`NotFailedError` when the job is not in the failed-jobs list (including
    when another caller re-queued it first), :class:`ArgumentsCutError` when the list kept
    only a cut copy of its arguments (running that would run another job).
    """
    await settle_expected(redis, max_jobs=max_jobs, max_age=max_age)
    job = await get(redis, job_id)
    if job is None:
        raise NotFailedError(job_id)
    if job.truncated:
        raise ArgumentsCutError(job_id)
    queue, priority = layout.route(job.function)
    now = now_ms()
    payload = serialize_job(
        job.function, tuple(job.args), job.kwargs, None, now, serializer=serialize
    )
    queued = await _RETRY.run_confirmed(
        redis,
        [
            keys.dead_letters(),
            keys.dead_letter_entries(),
            job_key_prefix + job_id,
            result_key_prefix + job_id,
            retry_key_prefix + job_id,
            in_progress_key_prefix + job_id,
            queue_key(layout.base, queue, priority),
            keys.job_meta(job_id),
            wake_key(layout.base, queue),
        ],
        [job_id, payload, now, RETRIED_JOB_EXPIRES_MS, meta_ttl],
    )
    if queued != 1:
        raise NotFailedError(job_id)
    return job


async def retry_as_configured(
    redis: Redis, settings: Settings, job_id: str, layout: QueueLayout | None = None
) -> DeadJob:
    """:func:`retry` with the record lifetime and failed-jobs bounds the settings give, on
    the job's declared queue and priority (``layout``; None: the default queue): what the
    retry route, the dashboard and bulk retry all run."""
    return await retry(
        redis,
        layout or QueueLayout(base=settings.queue_name),
        job_id,
        meta_ttl=settings.job_result_ttl,
        max_jobs=settings.dead_letter_max_jobs,
        max_age=settings.dead_letter_max_age,
    )
