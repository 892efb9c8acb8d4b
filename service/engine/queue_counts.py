"""How many jobs wait, how many are deferred, how many run: read in one script call.

arq leaves a job in its queue (a sorted set scored by when it is due) while it runs, so the
queue's size counts the running jobs too, and its oldest due entry is usually a running one: a
five-minute report showed as a job waiting for five minutes. Here:

- **deferred**: queued, not due yet (ZCOUNT above now: retries, scheduled jobs, webhooks
  waiting for a slot of their host);
- **running**: jobs in the tracking wrapper's running set whose arq lock (in-progress key)
  is held and that are still in the queue (a dead worker's leftovers drop out);
- **waiting**: due (ZCOUNT up to now) minus the running ones among them;
- **oldest waiting**: the first due entry without a lock, looking past the running jobs at the
  head of the queue.

The cost is O(log n) for the counts plus O(running) for the locks, never a scan of the keyspace
or of the whole queue: /health, the dashboard, the worker's health line and the metrics read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from service.engine.arq_api import in_progress_key_prefix
from service.store import keys
from service.store.scripts import LuaScript

PAGE = 100  # due entries read at a time while looking for the oldest waiting one
# KEYS: running set, then the queues (a named queue's priorities, or several queues' keys,
# service.engine.queues). ARGV: now (ms), in-progress prefix, page size.
# Returns {waiting, deferred, running, oldest waiting job's score or -1}, summed over the queues.
COUNT_SCRIPT = """
local now = tonumber(ARGV[1])
local page = tonumber(ARGV[3])
local waiting, deferred, running, oldest, oldest_raw = 0, 0, 0, -1, '-1'
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
for q = 2, #KEYS do
  local due = redis.call('ZCOUNT', KEYS[q], '-inf', now)
  deferred = deferred + redis.call('ZCOUNT', KEYS[q], '(' .. ARGV[1], '+inf')
  local running_due = 0
  for _, id in ipairs(ids) do
    local score = redis.call('ZSCORE', KEYS[q], id)
    if score and redis.call('EXISTS', ARGV[2] .. id) == 1 then
      running = running + 1
      if tonumber(score) <= now then running_due = running_due + 1 end
    end
  end
  waiting = waiting + math.max(0, due - running_due)
  local found, found_raw = -1, nil
  local offset = 0
  while due > 0 and found == -1 and offset <= running_due do
    local page_ids = redis.call('ZRANGEBYSCORE', KEYS[q], '-inf', now,
      'WITHSCORES', 'LIMIT', offset, page)
    if #page_ids == 0 then break end
    for i = 1, #page_ids, 2 do
      if redis.call('EXISTS', ARGV[2] .. page_ids[i]) == 0 then
        found, found_raw = tonumber(page_ids[i + 1]), page_ids[i + 1]
        break
      end
    end
    offset = offset + page
  end
  if found ~= -1 and (oldest == -1 or found < oldest) then oldest, oldest_raw = found, found_raw end
end
return {waiting, deferred, running, oldest_raw}
"""
_COUNT = LuaScript(COUNT_SCRIPT)


@dataclass(frozen=True, slots=True)
class QueueCounts:
    waiting: int  # due now, not running: waiting for a worker
    deferred: int  # queued, due later
    running: int  # a worker runs them now
    oldest_waiting_ms: int | None  # when the longest-waiting job became due (ms), if any

    @property
    def queued(self) -> int:
        """Jobs in the queue that no worker runs: waiting and deferred."""
        return self.waiting + self.deferred

    def oldest_waiting_age(self, now_ms: int) -> float | None:
        """Seconds the longest-waiting job has waited since it was due."""
        if self.oldest_waiting_ms is None:
            return None
        return max(0.0, (now_ms - self.oldest_waiting_ms) / 1000)


async def queue_counts(redis: Redis, queues: str | Sequence[str], now_ms: int) -> QueueCounts:
    """The waiting, deferred and running jobs of ``queues`` (one sorted set, or several
    summed: a named queue's priorities, every queue) as of ``now_ms``."""
    queue_keys = [queues] if isinstance(queues, str) else list(queues)
    waiting, deferred, running, oldest = await _COUNT.run(
        redis, [keys.running(), *queue_keys], [now_ms, in_progress_key_prefix, PAGE]
    )
    oldest_ms = int(float(oldest))
    return QueueCounts(
        waiting=max(0, int(waiting)),
        deferred=int(deferred),
        running=int(running),
        oldest_waiting_ms=None if oldest_ms < 0 else oldest_ms,
    )
