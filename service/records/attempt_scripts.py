"""The tracking wrapper's two writes on every attempt, each as one Lua call.

Every attempt writes about twenty small commands: its start (lock, status hash, running set,
live event) and its end (history, status hash, day counters, recent list, live event). As
commands they cost the worker more CPU than the no-op job itself (each is built, encoded and
answered separately); as one script call each, the work moves to Redis, which does it in
microseconds. Every way an attempt ends (success, failure, retry, cancel, interruption) goes
through the one end script, with what it writes chosen by its arguments; the keys are passed
in, so the key layout stays in service.store.keys. A success's end goes in the engine's own
finishing call (service.engine.finish): such a job costs the worker two calls of its own (the
start, and the finish carrying the end) besides its share of a claim.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from redis.asyncio import Redis

from service.engine.arq_api import in_progress_key_prefix
from service.records.stats import STATS_TTL_SECONDS
from service.store import keys
from service.store.scripts import LuaScript, ScriptCall

# KEYS: lock, meta, running, events channel, expected-dead-letters hash.
# ARGV: lock ms, function, attempt, started ms, ttl, job id, status event, expected entry or ''.
_START = LuaScript("""
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local previous = redis.call('HMGET', KEYS[2], 'open_attempt', 'started_at', 'requeued')
redis.call('HDEL', KEYS[2], 'progress')
redis.call('HSET', KEYS[2], 'function', ARGV[2], 'attempts', ARGV[3], 'started_at', ARGV[4],
           'open_attempt', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])
redis.call('PUBLISH', KEYS[4], ARGV[7])
if ARGV[8] ~= '' then redis.call('HSET', KEYS[5], ARGV[6], ARGV[8]) end
return previous
""")

# KEYS: attempts, meta, expected-dead-letters hash, day stats, recent list, last-run hash,
# running set, events channel.
# ARGV: attempt entry, attempts kept, ttl, job id, stats field or '', stats ttl, recent kept,
# function or '' (the job is not finished: no recent list, no last run), '1' or '' (file the
# job as failed if this attempt is lost: keep the expected entry), status event or '', then
# meta field/value pairs.
_END = LuaScript("""
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('HDEL', KEYS[2], 'open_attempt')
if ARGV[9] == '' then redis.call('HDEL', KEYS[3], ARGV[4]) end
if #ARGV > 10 then redis.call('HSET', KEYS[2], unpack(ARGV, 11)) end
redis.call('EXPIRE', KEYS[2], ARGV[3])
if ARGV[5] ~= '' then
  redis.call('HINCRBY', KEYS[4], ARGV[5], 1)
  redis.call('EXPIRE', KEYS[4], ARGV[6])
end
if ARGV[8] ~= '' then
  redis.call('LPUSH', KEYS[5], ARGV[4])
  redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[7]) - 1)
  redis.call('HSET', KEYS[6], ARGV[8], ARGV[4])
end
if ARGV[10] ~= '' then
  redis.call('ZREM', KEYS[7], ARGV[4])
  redis.call('PUBLISH', KEYS[8], ARGV[10])
end
return 1
""")


def submit_start(
    redis: Redis,
    job_id: str,
    *,
    lock_ms: int,
    function: str,
    attempt: int,
    started_ms: int,
    ttl: int,
    status_event: str,
    expected: str,
) -> Awaitable[list[bytes | None]]:
    """Send an attempt's start now (service.store.scripts: it leaves before anything sent
    after it); awaited, the status hash's open_attempt, started_at and requeued as they were
    before (what a dead last attempt left)."""
    script_keys = [
        in_progress_key_prefix + job_id,
        keys.job_meta(job_id),
        keys.running(),
        keys.job_events(job_id, keys.database_of(redis)),
        keys.dead_letter_expected(),
    ]
    args: list[Any] = [lock_ms, function, attempt, started_ms, ttl, job_id, status_event]
    args.append(expected)
    reply: Awaitable[list[bytes | None]] = _START.submit(redis, script_keys, args)
    return reply


def end_call(
    redis: Redis,
    job_id: str,
    *,
    entry: str,
    keep: int,
    ttl: int,
    meta: dict[str, str | int],
    stats_key: str,
    stats_field: str,
    recent_keep: int,
    finished_function: str,
    keep_expected: bool,
    status_event: str,
) -> ScriptCall:
    """The call that closes an attempt, to send or to hand to the engine's finish
    (service.engine.finish, one call for both): history entry, status fields, and as asked the day's
    counter (``stats_field``), the recent list and last run (``finished_function``: the job is
    done), the expected failed-jobs entry (dropped unless ``keep_expected``), and the job
    leaving the running set with ``status_event``."""
    script_keys = [
        keys.job_attempts(job_id),
        keys.job_meta(job_id),
        keys.dead_letter_expected(),
        stats_key,
        keys.recent_finished(),
        keys.last_run(),
        keys.running(),
        keys.job_events(job_id, keys.database_of(redis)),
    ]
    args: list[Any] = [entry, keep, ttl, job_id, stats_field, STATS_TTL_SECONDS, recent_keep]
    args += [finished_function, "1" if keep_expected else "", status_event]
    for field, value in meta.items():
        args += [field, value]
    return ScriptCall(_END, script_keys, args)
