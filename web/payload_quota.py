"""The byte quota per token (PAYLOAD_QUOTA_PER_TOKEN per PAYLOAD_QUOTA_WINDOW seconds), in one
script call through the web app's auto-pipelined Redis client.

It was a ``limits`` sliding-window counter: two calls per enqueue (a look, then the count),
each its own round trip on a pooled connection outside the pipeline, which every request
queued behind. That cost the front door about 40% of its requests per second (wrk, 50
connections, `POST /send-email`, one run each on the same machine: 2,070 req/s with it, 3,550
with no quota). As one script sent with the request's other commands, its round trip shared
by every request in the event loop's tick, and the look left out when no recipient limit can
refuse the request after it: 3,670 req/s (no quota in the same minutes: 3,550-4,360).

The counter slides as ``limits``'s did: the current window's bytes plus the previous
window's, weighted by how much of it still overlaps the last ``window`` seconds; two keys per
token, expiring on their own.
"""

from __future__ import annotations

import math
import time

from redis.asyncio import Redis

from service.store.scripts import LuaScript

KEY_PREFIX = "jobsvc:ratelimit:payload"

# KEYS: this window's counter, the previous one's. ARGV: quota, size, window ms, ms elapsed in
# this window, 1 to count the bytes (0: only look). Returns {fits, previous, current}.
_QUOTA = LuaScript("""
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local window = tonumber(ARGV[3])
local used = math.floor(previous * (window - tonumber(ARGV[4])) / window) + current
if used + tonumber(ARGV[2]) > tonumber(ARGV[1]) then return {0, previous, current} end
if ARGV[5] == '1' then
  redis.call('INCRBY', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], window * 2)
end
return {1, previous, current}
""")


class PayloadQuota:
    """``quota`` bytes of job payloads per ``window`` seconds for each token."""

    def __init__(self, quota: int, window: int) -> None:
        self.quota, self.window_ms = quota, window * 1000

    async def take(self, redis: Redis, token_id: str, size: int, *, count: bool) -> int:
        """0 when ``size`` more bytes fit the token's quota (counted, unless ``count`` is
        false), else the whole seconds until they would (at least 1)."""
        now = int(time.time() * 1000)
        index, elapsed = divmod(now, self.window_ms)
        keys = [f"{KEY_PREFIX}:{token_id}:{index}", f"{KEY_PREFIX}:{token_id}:{index - 1}"]
        args = [self.quota, size, self.window_ms, elapsed, 1 if count else 0]
        fits, previous, current = (int(x) for x in await _QUOTA.run(redis, keys, args))
        if fits:
            return 0
        return max(1, math.ceil(self._wait_ms(size, previous, current, elapsed) / 1000))

    def _wait_ms(self, size: int, previous: int, current: int, elapsed: int) -> float:
        """How long until the weighted count leaves room for ``size`` bytes: the previous
        window's share fades out first; what it cannot free waits for this window to end."""
        over = math.floor(previous * (self.window_ms - elapsed) / self.window_ms)
        need = over + current + size - self.quota
        if previous and need <= over:
            return need * self.window_ms / previous
        return self.window_ms - elapsed
