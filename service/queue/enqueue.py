"""Enqueueing jobs by name: the only way the web app hands work to the worker."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms

from service.observability.origin import REQUEST_ID_KWARG, current_origin
from service.store import keys
from service.store.scripts import LuaScript


class JobName(StrEnum):
    """Names the worker registers its functions under (service.worker.options)."""

    SEND_EMAIL = "send_email"
    SEND_WELCOME_EMAIL = "send_welcome_email"
    PROCESS_IMAGE = "process_image"
    DELIVER_WEBHOOK = "deliver_webhook"
    LOG_EVENT = "log_event"
    DAILY_REPORT = "daily_report"
    CLEANUP_OLD_FILES = "cleanup_old_files"


class EnqueueError(RuntimeError):
    """arq refused the job (its id already exists), which a fresh uuid4 makes a bug."""


# What arq's enqueue_job does in three round trips (WATCH, EXISTS, MULTI/EXEC), in one, plus
# a wake-up token for an idle worker (service.engine.wakeup). The list never holds more than one.
# KEYS: job, result, queue, wake. ARGV: serialized job, expiry ms, score, job id.
ENQUEUE_SCRIPT = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('LPUSH', KEYS[4], 1)
redis.call('LTRIM', KEYS[4], 0, 0)
redis.call('PEXPIRE', KEYS[4], 60000)
return 1
"""
_ENQUEUE = LuaScript(ENQUEUE_SCRIPT)


async def enqueue_job(redis: ArqRedis, function: str, job_id: str, kwargs: dict[str, Any]) -> bool:
    """Queue a job in arq's own format and wake a worker; False when the id already exists.

    On an auto-pipelined client (service.store.autopipeline) concurrent calls go to Redis together;
    each returns once its own job is in Redis.
    """
    now = timestamp_ms()
    payload = serialize_job(function, (), kwargs, None, now, serializer=redis.job_serializer)
    queue_name = redis.default_queue_name
    script_keys = [
        job_key_prefix + job_id,
        result_key_prefix + job_id,
        queue_name,
        keys.wake(queue_name),
    ]
    args = [payload, redis.expires_extra_ms, now, job_id]
    return int(await _ENQUEUE.run(redis, script_keys, args)) == 1


async def enqueue(redis: ArqRedis, function: JobName, **kwargs: Any) -> str:
    """Queue ``function(**kwargs)`` under a fresh, unguessable id and return that id.

    Inside a web request the request's id goes along (service.observability.origin) and is
    counted.
    """
    job_id = uuid.uuid4().hex
    origin = current_origin.get()
    if origin is not None:
        kwargs[REQUEST_ID_KWARG] = origin.request_id
    if not await enqueue_job(redis, function.value, job_id, kwargs):
        raise EnqueueError(f"job id {job_id} already exists")
    if origin is not None:
        origin.on_enqueued(function.value)
    return job_id
