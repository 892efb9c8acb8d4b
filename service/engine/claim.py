"""Taking a batch of due jobs in one round trip, highest priority first.

arq takes jobs one at a time: WATCH the job's in-progress key, EXISTS, ZSCORE, MULTI/PSETEX/
EXEC, then another transaction to read the job and count the try: five round trips per job
before it starts. A Lua script does the same checks for a whole batch atomically: it walks the
due part of the worker's queues (service.engine.queues: one sorted set per named queue and
priority), merging their heads by effective due time (the due time plus the priority's
ageing offset, so higher priority first, oldest first within one, and no starvation), skips
jobs that are running (their lock is set) and takes up to ``count``: sets each one's lock,
counts its try, clears any abort request made before it started (reported, as arq does) and
returns its stored data and which key it came from. Jobs are left in their queue while they
run, exactly as arq leaves them, so arq's job API (status, results, abort) and arq's own
workers still read the same keys the same way.

While the queue is paused (service.queue.pause sets the flag keys.paused), the script takes
nothing: the flag is read inside the call that would take jobs, so a pause costs the claim one
EXISTS in Redis and one more key name in the request, never another round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
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

# KEYS: abort set, pause flag, then the queues. ARGV: now (ms), how many to take, lock ms, how
# many entries to look at at most per queue, the key prefixes (in-progress, job, retry), then
# each queue's ageing offset (ms).
# Returns {running_seen, id1, score1, data1, try1, aborted1, queue1, id2, ...}; {0} if paused.
CLAIM_SCRIPT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {0} end
local n = #KEYS - 2
local heads, filled, only = {}, 0, 0
for q = 1, n do
  heads[q] = redis.call('ZRANGEBYSCORE', KEYS[q + 2], '-inf', ARGV[1],
    'WITHSCORES', 'LIMIT', 0, ARGV[4])
  if #heads[q] > 0 then filled, only = filled + 1, q end
end
local want = tonumber(ARGV[2])
local out, k, taken = {0}, 1, 0
local function take(id, score, q)
  if redis.call('EXISTS', ARGV[5] .. id) == 1 then
    out[1] = 1
    return
  end
  redis.call('PSETEX', ARGV[5] .. id, ARGV[3], '1')
  local tries = redis.call('INCR', ARGV[7] .. id)
  redis.call('EXPIRE', ARGV[7] .. id, 88400)
  local data = redis.call('GET', ARGV[6] .. id)
  out[k + 1], out[k + 2], out[k + 3], out[k + 4] = id, score, data or '', tries
  out[k + 5], out[k + 6] = redis.call('ZREM', KEYS[1], id), q
  k = k + 6
  taken = taken + 1
end
if filled == 1 then
  -- one queue has due jobs (the usual case): its order is the order, nothing to merge
  local due = heads[only]
  for i = 1, #due, 2 do
    if taken >= want then break end
    take(due[i], due[i + 1], only)
  end
elseif filled > 1 then
  local at, offset = {}, {}
  for q = 1, n do
    at[q] = 1
    offset[q] = tonumber(ARGV[7 + q])
  end
  while taken < want do
    local best, best_due = 0, 0
    for q = 1, n do
      local i = at[q]
      if i < #heads[q] then
        local due = tonumber(heads[q][i + 1]) + offset[q]
        if best == 0 or due < best_due then best, best_due = q, due end
      end
    end
    if best == 0 then break end
    local i = at[best]
    at[best] = i + 2
    take(heads[best][i], heads[best][i + 1], best)
  end
end
return out
"""
_CLAIM = LuaScript(CLAIM_SCRIPT)
FIELDS = 6  # per claimed job in the script's reply


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job this worker now holds the lock of, with what arq's run_job would read first."""

    job_id: str
    score: int
    data: bytes | None  # None: the job's data expired (arq fails it as "job expired")
    job_try: int
    abort_requested: bool
    queue_key: str  # the sorted set it waits in: its finishing writes go there


async def claim(
    redis: ArqRedis,
    queues: Sequence[tuple[str, int]],
    *,
    pause_flag: str,
    now_ms: int,
    count: int,
    lock_ms: int,
    scan: int,
) -> tuple[list[ClaimedJob], bool]:
    """Take up to ``count`` due jobs that no worker is running from ``queues`` (each key with
    its ageing offset, service.engine.queues), looking at most ``scan`` entries of each;
    also says whether due jobs were skipped because they are running. Takes none while
    ``pause_flag`` (keys.paused) is set."""
    args: list[Any] = [now_ms, count, lock_ms, scan]
    args += [in_progress_key_prefix, job_key_prefix, retry_key_prefix]
    args += [offset for _, offset in queues]
    script_keys = [abort_jobs_ss, pause_flag, *(key for key, _ in queues)]
    reply = await _CLAIM.run(redis, script_keys, args)
    running_seen, fields = bool(reply[0]), reply[1:]
    jobs = [
        ClaimedJob(
            job_id=fields[i].decode(),
            score=int(float(fields[i + 1])),
            data=fields[i + 2] or None,
            job_try=int(fields[i + 3]),
            abort_requested=bool(fields[i + 4]),
            queue_key=queues[int(fields[i + 5]) - 1][0],
        )
        for i in range(0, len(fields), FIELDS)
    ]
    return jobs, running_seen


def single_queue(queue: str, pause_flag: str | None = None) -> dict[str, Any]:
    """claim's queue arguments for one key and no priorities (arq's single queue)."""
    return {"queues": [(queue, 0)], "pause_flag": pause_flag or keys.paused(queue)}
