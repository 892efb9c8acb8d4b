"""Send slots shared by every worker: a rate limit's windows kept in Redis, checked atomically.

A limit (EMAIL_RATE_LIMIT, WEBHOOK_HOST_RATE_LIMIT) is one or more windows, ``amount`` sends
per ``period``, per scope ("email", "webhook:<host>"). The promise, measured at the receiver:
no ``period`` long stretch, wherever it starts, holds more than ``amount`` arrivals.

**Exact admission.** A send may start at time t only if fewer than ``amount`` sends are either
under way ("sending") or ended after t - period ("sent"). A message arrives between its send's
start and end, so any ``amount + 1`` arrivals within one period would include one whose
send started while all the others were under way or had ended within the period before it:
that start was refused. Network and worker delays cannot crowd a window, and no margin is
guessed. A send under way holds a lease (its job's time limit): a worker that dies mid-send
leaves an entry that ends, for the count, when the lease does.

**Booked slots, no churn.** Admission alone would turn 1,000 queued emails at 20/s into 980
refusals a second. So a job is first given a slot from a schedule ("slots": the last
``amount`` times handed out, in order; the next is the oldest of them plus the period and
MARGIN), and a slot more than LEAD away is booked: the job's tracking hash keeps it
(``rate_slot``, with ``waiting_for`` for the status API), the try the claim counted is given
back, and the job goes back to the queue to come LEAD before it. Then the same call finds the
booking and checks admission at the slot; the worker sleeps the rest (up to twice LEAD, when
earlier sends ended late). Each email waiting for the limit is postponed once; only a booked
job whose window the exact check finds freeing later than that is postponed again (earlier
sends outlasting the schedule's margin), to the time the window frees.

One Lua call reads Redis's own clock, checks and books, so every worker sees one count.
Why not the ``limits`` library the web app uses for its own limits: its moving window can
tell when a window frees, but every job over the limit would be told the same time and come
back together, to be turned away again but one; it cannot hand out distinct future slots,
nor count a send from its start to its end.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from limits import parse_many
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.engine.arq_api import job_key_prefix, retry_key_prefix
from service.store import keys
from service.store.scripts import LuaScript

# Added to the period between a window's oldest slot and the next in the schedule, for the
# time a send takes (the exact check waits for its end): measured on loopback, 5-30 ms once
# connections are open. A schedule too tight only makes jobs sleep a little at their slot.
MARGIN_MS = 50
LEAD_MS = 250  # a booked job comes back this early: the claim may lag its due time
UNKNOWN_WAIT_MS = 100  # a window full of sends under way: look again this much later
# a job's stored form must outlive its wait: arq's margin beyond when it is due (one day)
JOB_KEY_MARGIN_MS = 86_400_000

_HOUSEKEEPING = """
local function tidy(sending, sent, period, now)
  local ended = redis.call('ZRANGEBYSCORE', sending, '-inf', now, 'WITHSCORES')
  if #ended > 0 then
    for j = 1, #ended, 2 do redis.call('ZADD', sent, ended[j + 1], ended[j]) end
    redis.call('ZREMRANGEBYSCORE', sending, '-inf', now)
    redis.call('PEXPIRE', sent, period + 1000)
  end
  redis.call('ZREMRANGEBYSCORE', sent, '-inf', now - period)
end
"""

# KEYS: tracking hash, arq retry key, arq job key, token counter, then per window its slots
# list, sending set and sent set.
# ARGV: lead, margin, unknown wait, tracking hash ttl (ms), job key margin (ms), lease (ms),
# waiting_for text, then amount and period (ms) per window.
# Returns {1, ms to wait before sending, token} (go) or {0, ms to wait in the queue}.
_TAKE = LuaScript(
    _HOUSEKEEPING
    + """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local lead, margin, unknown = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lease = tonumber(ARGV[6])
local windows = {}
for i = 5, #KEYS, 3 do
  local n = (i - 5) / 3
  local w = {slots = KEYS[i], sending = KEYS[i + 1], sent = KEYS[i + 2],
             amount = tonumber(ARGV[8 + 2 * n]), period = tonumber(ARGV[9 + 2 * n])}
  tidy(w.sending, w.sent, w.period, now)
  redis.call('LTRIM', w.slots, -w.amount, -1)
  windows[#windows + 1] = w
end

-- back in the queue, to come back ``back`` ms from now for its slot at ``slot``
local function postpone(slot, back)
  redis.call('HSET', KEYS[1], 'rate_slot', slot, 'waiting_for', ARGV[7])
  if redis.call('PTTL', KEYS[1]) < slot - now + tonumber(ARGV[4]) then
    redis.call('PEXPIRE', KEYS[1], slot - now + tonumber(ARGV[4]))
  end
  local keep = slot - now + tonumber(ARGV[5])
  local pttl = redis.call('PTTL', KEYS[3])
  if pttl > 0 and pttl < keep then redis.call('PEXPIRE', KEYS[3], keep) end
  redis.call('DECR', KEYS[2])
  return {0, math.max(back, 1)}
end

-- when every window admits a send starting at t (nil: a window is full of sends under way)
local function free_at(t)
  local free = t
  for _, w in ipairs(windows) do
    local sending = redis.call('ZCARD', w.sending)
    if sending >= w.amount then return nil end
    local counted = sending + redis.call('ZCOUNT', w.sent, '(' .. (t - w.period), '+inf')
    if counted >= w.amount then
      local oldest = redis.call('ZRANGEBYSCORE', w.sent, '(' .. (t - w.period), '+inf',
                                'WITHSCORES', 'LIMIT', counted - w.amount, 1)
      free = math.max(free, tonumber(oldest[2]) + w.period)
    end
  end
  return free
end

local booked = redis.call('HGET', KEYS[1], 'rate_slot')
local slot
if booked then
  booked = tonumber(booked)
  if now < booked - 2 * lead then return postpone(booked, booked - lead - now) end
  slot = math.max(now, booked)
else
  slot = now
  for _, w in ipairs(windows) do
    if redis.call('LLEN', w.slots) >= w.amount then
      slot = math.max(slot, tonumber(redis.call('LINDEX', w.slots, 0)) + w.period + margin)
    end
  end
  for _, w in ipairs(windows) do
    redis.call('RPUSH', w.slots, slot)
    redis.call('LTRIM', w.slots, -w.amount, -1)
    redis.call('PEXPIRE', w.slots, slot - now + w.period + margin)
  end
  if slot - now > lead then return postpone(slot, slot - lead - now) end
end

local start = free_at(slot)
if start == nil then return postpone(now + unknown, unknown) end
if start - now > 2 * lead then return postpone(start, start - lead - now) end
local token = redis.call('INCR', KEYS[4])
redis.call('PEXPIRE', KEYS[4], 2 * lead + lease + 86400000)
for _, w in ipairs(windows) do
  redis.call('ZADD', w.sending, start + lease, token)
  redis.call('PEXPIRE', w.sending, 2 * lead + lease + w.period)
end
if booked then redis.call('HDEL', KEYS[1], 'rate_slot', 'waiting_for') end
return {1, start - now, token}
"""
)

# KEYS: per window its sending set and sent set. ARGV: token, then period (ms) per window.
_END = LuaScript(
    _HOUSEKEEPING
    + """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
for i = 1, #KEYS, 2 do
  local period = tonumber(ARGV[1 + (i + 1) / 2])
  if redis.call('ZREM', KEYS[i], ARGV[1]) == 1 then
    redis.call('ZADD', KEYS[i + 1], now, ARGV[1])
    redis.call('PEXPIRE', KEYS[i + 1], period + 1000)
  end
  tidy(KEYS[i], KEYS[i + 1], period, now)
end
return 1
"""
)


@dataclass(frozen=True, slots=True)
class Window:
    """At most ``amount`` sends in any ``period_ms`` milliseconds."""

    amount: int
    period_ms: int


def parse_windows(text: str) -> tuple[Window, ...]:
    """``"10/second;50000/day"`` (the ``limits`` syntax, checked by settings.py) as windows;
    empty: no limit."""
    if not text.strip():
        return ()
    return tuple(Window(item.amount, item.get_expiry() * 1000) for item in parse_many(text))


@dataclass(frozen=True, slots=True)
class Verdict:
    """``go``: send after ``wait`` seconds, then tell :func:`end_send` with ``token``; else
    put the job back in the queue for ``wait`` seconds (its try given back, its slot booked)."""

    go: bool
    wait: float
    token: int = 0


async def take_slot(
    redis: Redis,
    job_id: str,
    scope: str,
    windows: tuple[Window, ...],
    *,
    waiting_for: str,
    ttl: int,
    lease: float,
) -> Verdict:
    """One send for ``scope`` by the job ``job_id`` (see the module docstring). ``ttl`` is
    JOB_RESULT_TTL, the tracking hash's life beyond the wait; ``lease`` (seconds) how long
    the send may take at most (the job's time limit): past it, it counts as ended."""
    script_keys = [
        keys.job_meta(job_id),
        retry_key_prefix + job_id,
        job_key_prefix + job_id,
        keys.rate_tokens(scope),
    ]
    args: list[Any] = [LEAD_MS, MARGIN_MS, UNKNOWN_WAIT_MS, ttl * 1000, JOB_KEY_MARGIN_MS]
    args += [int(lease * 1000), waiting_for]
    for window in windows:
        script_keys += [
            keys.rate_window(scope, window.amount, window.period_ms, part)
            for part in ("slots", "sending", "sent")
        ]
        args += [window.amount, window.period_ms]
    reply = await _TAKE.run(redis, script_keys, args)
    if int(reply[0]):
        return Verdict(True, int(reply[1]) / 1000, int(reply[2]))
    return Verdict(False, int(reply[1]) / 1000)


async def end_send(redis: Redis, scope: str, windows: tuple[Window, ...], token: int) -> None:
    """The send ``token`` has ended: it counts in its windows from now, for a period. Should
    Redis not answer, its lease ends it later, which only counts it longer."""
    script_keys: list[str] = []
    args: list[Any] = [token]
    for window in windows:
        script_keys += [
            keys.rate_window(scope, window.amount, window.period_ms, part)
            for part in ("sending", "sent")
        ]
        args.append(window.period_ms)
    with contextlib.suppress(RedisError, OSError):
        await _END.run(redis, script_keys, args)
