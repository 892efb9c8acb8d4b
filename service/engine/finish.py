"""A run's end as arq writes it, in one script call instead of five commands.

arq ends a job with a MULTI of up to five commands: the result (when kept), the job's data and
try count deleted, its abort request and its queue entry removed, its lock deleted (or, for a
cron run, kept a while). Sent as commands, each is packed and its reply parsed by the worker,
which costs it more CPU than Redis spends doing them; one EVALSHA carries the same writes.
The order within the script is arq's: the job leaves its queue before its lock goes, so no
other worker can take it in between (a script runs whole, so the order only matters to a
reader). The keys are passed in, so arq's key layout stays in service.engine.arq_api.

A job's own last write (the tracking wrapper's attempt end) can ride in the same call
(``then``, service.store.scripts.chained): one call per finished job instead of two.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from service.engine.arq_api import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from service.store.scripts import LuaScript, ScriptCall, chained_call

# KEYS: result, retry count, job data, abort set, queue, lock.
# ARGV: job id, finished ('1' or ''), result data or '', result ms or '' (kept forever),
# score increment or '' (a retry or a postponement: back in the queue), lock ms or '' (delete).
_FINISH = LuaScript("""
if ARGV[2] == '1' then
  if ARGV[3] ~= '' then
    if ARGV[4] ~= '' then
      redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
    else
      redis.call('SET', KEYS[1], ARGV[3])
    end
  end
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
elseif ARGV[5] ~= '' then
  redis.call('ZINCRBY', KEYS[5], ARGV[5], ARGV[1])
end
if ARGV[6] == '' then
  redis.call('DEL', KEYS[6])
else
  redis.call('PEXPIRE', KEYS[6], ARGV[6])
end
return 1
""")


async def finish_run(
    redis: Redis,
    job_id: str,
    queue: str,
    *,
    finished: bool,
    result: bytes | None,
    result_ms: int | None,
    incr_score: int | None,
    lock_ms: int | None,
    then: ScriptCall | None = None,
) -> None:
    """End a run: with ``finished``, store ``result`` (for ``result_ms``, or for ever when
    None) and remove the job; else put it back in ``queue`` ``incr_score`` ms later if given.
    The lock is deleted, or kept ``lock_ms`` (a cron run's). ``then`` runs right after, in the
    same call."""
    script_keys = [
        result_key_prefix + job_id,
        retry_key_prefix + job_id,
        job_key_prefix + job_id,
        abort_jobs_ss,
        queue,
        in_progress_key_prefix + job_id,
    ]
    args: list[Any] = [
        job_id,
        "1" if finished else "",
        result or "",
        "" if result_ms is None else result_ms,
        incr_score or "",
        "" if lock_ms is None else lock_ms,
    ]
    if then is None:
        await _FINISH.run(redis, script_keys, args)
        return
    call = chained_call(ScriptCall(_FINISH, script_keys, args), then)
    await call.script.run(redis, call.keys, call.args)
