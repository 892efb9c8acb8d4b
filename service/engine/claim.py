"""Taking a batch of due jobs in one round trip.

arq takes jobs one at a time: WATCH the job's in-progress key, EXISTS, ZSCORE, MULTI/PSETEX/
EXEC, then another transaction to read the job and count the try: five round trips per job
before it starts. A Lua script does the same checks for a whole batch atomically: it walks the
due part of the queue, oldest first, skips jobs that are running (their lock is set) and
takes up to ``count``: sets each one's lock, counts its try, clears any abort request made
before it started (reported, as arq does) and returns its stored data. Jobs are left in the
queue while they run, exactly as arq leaves them, so arq's job API (status, results, abort)
and arq's own workers still read the same keys the same way.

While the queue is paused (service.queue.pause sets the flag keys.paused), the script takes
nothing: the flag is read inside the call that would take jobs, so a pause costs the claim one
EXISTS in Redis and one more key name in the request, never another round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis

from service.engine.arq_api import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    retry_key_prefix,
)
from service.store import keys
from service.store.scripts import LuaScript

# KEYS: queue, abort set, pause flag. ARGV: now (ms), how many to take, lock ms, how many queue
# entries to look at at most, then the key prefixes: in-progress, job, retry.
# Returns {running_seen, id1, score1, data1, try1, aborted1, id2, ...}; {0} while paused.
CLAIM_SCRIPT = """
if redis.call('EXISTS', KEYS[3]) == 1 then return {0} end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[4])
local want = tonumber(ARGV[2])
local out = {0}
local taken = 0
for i = 1, #due, 2 do
  if taken >= want then break end
  local id = due[i]
  if redis.call('EXISTS', ARGV[5] .. id) == 1 then
    out[1] = 1
  else
    redis.call('PSETEX', ARGV[5] .. id, ARGV[3], '1')
    local tries = redis.call('INCR', ARGV[7] .. id)
    redis.call('EXPIRE', ARGV[7] .. id, 88400)
    local data = redis.call('GET', ARGV[6] .. id)
    out[#out + 1] = id
    out[#out + 1] = due[i + 1]
    out[#out + 1] = data or ''
    out[#out + 1] = tries
    out[#out + 1] = redis.call('ZREM', KEYS[2], id)
    taken = taken + 1
  end
end
return out
"""
_CLAIM = LuaScript(CLAIM_SCRIPT)


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job this worker now holds the lock of, with what arq's run_job would read first."""

    job_id: str
    score: int
    data: bytes | None  # None: the job's data expired (arq fails it as "job expired")
    job_try: int
    abort_requested: bool


async def claim(
    redis: ArqRedis, queue: str, *, now_ms: int, count: int, lock_ms: int, scan: int
) -> tuple[list[ClaimedJob], bool]:
    """Take up to ``count`` due jobs that no worker is running, looking at most ``scan``
    queue entries; also says whether due jobs were skipped because they are running.
    Takes none while the queue is paused."""
    args: list[Any] = [now_ms, count, lock_ms, scan]
    args += [in_progress_key_prefix, job_key_prefix, retry_key_prefix]
    reply = await _CLAIM.run(redis, [queue, abort_jobs_ss, keys.paused(queue)], args)
    running_seen, fields = bool(reply[0]), reply[1:]
    jobs = [
        ClaimedJob(
            job_id=fields[i].decode(),
            score=int(float(fields[i + 1])),
            data=fields[i + 2] or None,
            job_try=int(fields[i + 3]),
            abort_requested=bool(fields[i + 4]),
        )
        for i in range(0, len(fields), 5)
    ]
    return jobs, running_seen
