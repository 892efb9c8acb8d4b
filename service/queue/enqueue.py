"""Queueing jobs: the only way the web app hands work to the worker.

A job is stored exactly as arq's ``enqueue_job`` stores it (its key, its place in the queue
scored by when it is due), so arq's own clients and workers read it the same way; it only
takes one round trip instead of three, and wakes an idle worker in the same call.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from arq.connections import ArqRedis

from service.engine.arq_api import job_key_prefix, result_key_prefix, serialize_job, timestamp_ms
from service.engine.queues import DEFAULT_QUEUE, NORMAL, Priority, queue_key, wake_key
from service.observability.origin import REQUEST_ID_KWARG, current_origin
from service.records.search_index import SearchIndex, index_lines, member
from service.store.scripts import LuaScript, ScriptCall, gated_call

# Wake one idle worker (service.engine.wakeup): the list holds at most one token, and it
# goes away after a minute should no worker be there to take it. KEYS[n] is the wake list.
WAKE_A_WORKER = """
redis.call('LPUSH', KEYS[{n}], 1)
redis.call('LTRIM', KEYS[{n}], 0, 0)
redis.call('PEXPIRE', KEYS[{n}], 60000)
"""


def wake_a_worker(key_index: int) -> str:
    """The Lua lines that wake a worker, for a script whose KEYS[key_index] is the wake list."""
    return WAKE_A_WORKER.format(n=key_index)


class EnqueueError(RuntimeError):
    """arq refused the job (its id already exists), which a fresh uuid4 makes a bug."""


class GateClosed(Exception):
    """The gate given to :func:`enqueue` said no: nothing was queued. ``reply`` is the gate
    script's reply, for its caller to tell why."""

    def __init__(self, reply: list[Any]) -> None:
        super().__init__("the enqueue's gate refused the job")
        self.reply = reply


# What arq's enqueue_job does in three round trips (WATCH, EXISTS, MULTI/EXEC), in one, plus
# a wake-up token for an idle worker, and the job's entries in the search index
# (service.records.search_index) when it is asked for.
# KEYS: job, result, queue, wake, then the index sets (none: not indexed).
# ARGV: serialized job, expiry ms, score, job id, then the index's five arguments.
ENQUEUE_SCRIPT = f"""
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
{wake_a_worker(4)}
{index_lines(5, 5)}
return 1
"""
_ENQUEUE = LuaScript(ENQUEUE_SCRIPT)


async def enqueue_job(
    redis: ArqRedis,
    function: str,
    job_id: str,
    kwargs: dict[str, Any],
    *,
    run_at_ms: int | None = None,
    index: SearchIndex | None = None,
    search_keys: Sequence[str] = (),
    queue: str = DEFAULT_QUEUE,
    priority: Priority = NORMAL,
    gate: ScriptCall | None = None,
) -> bool:
    """Queue a job in arq's own format and wake a worker; False when the id already exists.

    ``run_at_ms`` defers it: it waits in the queue, scored by that time, as arq's
    ``_defer_until`` does, and its stored job lives until then plus arq's usual margin.
    On an auto-pipelined client (service.store.autopipeline) concurrent calls go to Redis
    together; each returns once its own job is in Redis, and with REDIS_MIN_REPLICAS_ACK once
    that many replicas hold it (else ReplicasBehindError: the API answers 503).
    With ``index`` the job is also added to the search index, under its function and each
    of ``search_keys``, in the same call: no round trip of its own. It waits in ``queue``'s
    sorted set of ``priority`` (service.engine.queues; the default queue's normal one is
    arq's own) and wakes a worker serving that queue.

    ``gate`` (a script replying with a list that starts with 1 to let the job in, such as
    web.payload_quota's count) runs first, in the same call: when it says no, nothing is
    queued and :class:`GateClosed` carries its reply. A check made in a round trip of its own
    cost a sequential client's request a quarter of the web app's CPU.
    """
    now = timestamp_ms()
    score = now if run_at_ms is None else max(run_at_ms, now)
    payload = serialize_job(function, (), kwargs, None, now, serializer=redis.job_serializer)
    base = redis.default_queue_name
    script_keys = [
        job_key_prefix + job_id,
        result_key_prefix + job_id,
        queue_key(base, queue, priority),
        wake_key(base, queue),
    ]
    args: list[Any] = [payload, score - now + redis.expires_extra_ms, score, job_id]
    if index is not None:
        script_keys += index.sets_for(function, search_keys)
        args += [member(job_id, function), now, now - index.keep_ms, index.max_jobs]
        args.append(index.keep_ms)
    if gate is None:
        return int(await _ENQUEUE.run_confirmed(redis, script_keys, args)) == 1
    call = gated_call(gate, ScriptCall(_ENQUEUE, script_keys, args))
    opened, reply = await call.script.run_confirmed(redis, call.keys, call.args)
    if opened != 1:
        raise GateClosed(reply)
    return int(reply) == 1


async def enqueue(
    redis: ArqRedis,
    function: str,
    kwargs: dict[str, Any],
    *,
    run_at_ms: int | None = None,
    job_id: str | None = None,
    index: SearchIndex | None = None,
    search_keys: Sequence[str] = (),
    queue: str = DEFAULT_QUEUE,
    priority: Priority = NORMAL,
    gate: ScriptCall | None = None,
) -> str:
    """Queue ``function(**kwargs)`` under a fresh, unguessable id (or ``job_id``, one made
    so beforehand) and return that id; ``run_at_ms`` (ms since the epoch) defers it until then;
    with ``index`` it can be found by job search, also by each of ``search_keys`` (see
    :func:`enqueue_job`); it waits in ``queue`` at ``priority``, once ``gate`` (see
    :func:`enqueue_job`) lets it.

    Inside a web request the request's id goes along (service.observability.origin) and is
    counted.
    """
    job_id = job_id or uuid.uuid4().hex
    origin = current_origin.get()
    if origin is not None:
        kwargs = {**kwargs, REQUEST_ID_KWARG: origin.request_id}
    queued = await enqueue_job(
        redis,
        function,
        job_id,
        kwargs,
        run_at_ms=run_at_ms,
        index=index,
        search_keys=search_keys,
        queue=queue,
        priority=priority,
        gate=gate,
    )
    if not queued:
        raise EnqueueError(f"job id {job_id} already exists")
    if origin is not None:
        origin.on_enqueued(function)
    return job_id
