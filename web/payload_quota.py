"""The byte quota per token (PAYLOAD_QUOTA_PER_TOKEN per PAYLOAD_QUOTA_WINDOW seconds), in one
script call through the web app's auto-pipelined Redis client.

It was a ``limits`` sliding-window counter: two calls per enqueue (a look, then the count),
each its own round trip on a pooled connection outside the pipeline, which every request
queued behind. That cost the front door about 40% of its requests per second (wrk, 50
connections, `POST /send-email`, one run each on the same machine: 2,070 req/s with it, 3,550
with no quota). As one script sent with the request's other commands, its round trip shared
by every request in the event loop's tick, and the look left out when no recipient limit can
refuse the request after it: 3,670 req/s (no quota in the same minutes: 3,550-4,360).
Counted as the gate of the enqueue's own script (:class:`QuotaCheck`, service.queue.enqueue),
the count takes no round trip of its own: a sequential client's `POST /events` took 410 us
of the web app's CPU with it in a call of its own, 310 us with no quota at all.

The counter slides as ``limits``'s did: the current window's bytes plus the previous
window's, weighted by how much of it still overlaps the last ``window`` seconds; two keys per
token, expiring on their own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.store.scripts import LuaScript, ScriptCall

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


@dataclass(frozen=True, slots=True)
class QuotaCheck:
    """One look at (or count of) a token's quota, not sent yet: its script call, which may go
    alone (web.ratelimit's ``check_payload``) or as the gate of the enqueue it guards
    (service.queue.enqueue), and what is needed to read its reply."""

    quota: PayloadQuota
    call: ScriptCall
    size: int
    elapsed: int  # ms into the current window when the check was made

    def wait(self, reply: Sequence[Any]) -> int:
        """0 when the script's ``reply`` says the bytes fit, else the whole seconds until
        they would (at least 1)."""
        fits, previous, current = (int(x) for x in reply)
        if fits:
            return 0
        wait_ms = self.quota.wait_ms(self.size, previous, current, self.elapsed)
        return max(1, math.ceil(wait_ms / 1000))


class PayloadQuota:
    """``quota`` bytes of job payloads per ``window`` seconds for each token."""

    def __init__(self, quota: int, window: int) -> None:
        self.quota, self.window_ms = quota, window * 1000

    def check(self, token_id: str, size: int, *, count: bool) -> QuotaCheck:
        """The call that looks whether ``size`` more bytes fit the token's quota and, if they
        do and ``count`` is true, counts them."""
        now = int(time.time() * 1000)
        index, elapsed = divmod(now, self.window_ms)
        keys = [f"{KEY_PREFIX}:{token_id}:{index}", f"{KEY_PREFIX}:{token_id}:{index - 1}"]
        args = [self.quota, size, self.window_ms, elapsed, 1 if count else 0]
        return QuotaCheck(self, ScriptCall(_QUOTA, keys, args), size, elapsed)

    def wait_ms(self, size: int, previous: int, current: int, elapsed: int) -> float:
        """How long until the weighted count leaves room for ``size`` bytes: the previous
        window's share fades out first; what it cannot free waits for this window to end."""
        over = math.floor(previous * (self.window_ms - elapsed) / self.window_ms)
        need = over + current + size - self.quota
        if previous and need <= over:
            return need * self.window_ms / previous
        return self.window_ms - elapsed
