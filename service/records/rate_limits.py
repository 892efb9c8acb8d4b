"""Send slots shared by every worker: a rate limit's windows booked in Redis, one call a job.

A limit (EMAIL_RATE_LIMIT, WEBHOOK_HOST_RATE_LIMIT) is one or more windows, ``amount`` sends
per ``period``. Each window keeps, per scope ("email", "webhook:<host>"), the list of the
last ``amount`` send times it handed out (ms, oldest first). A job asking to send gets the
first time no window objects to: now, or the oldest of a full window's times plus its period
(and MARGIN). That time is appended to every window of the scope, so times are handed out in
order and any ``amount + 1`` of them span more than ``period``: no window of ``period``
seconds, wherever it starts, holds more than ``amount`` sends. It is exact across workers
because one Lua call, reading Redis's own clock, reads and books.

A time more than LEAD away is a booking: the job's tracking hash keeps it (``rate_slot``,
with ``waiting_for`` for the status API), the try the claim counted is given back, and the
job is put back in the queue to come LEAD before its slot; then this call finds the booking
and lets it go, the worker sleeping the rest. So 1,000 queued emails at 20/s cost one
postponement each, not one a second each. A job that comes back later than LATE after its
slot (its worker was busy, or died) has lost it and books again: a send later than the
booked time by more than MARGIN could otherwise crowd the next window.

Why not the ``limits`` library the web app uses for its own limits: its moving window can
tell when a window frees, but every job over the limit would be told the same time and come
back together, to be turned away again but one; it cannot hand out distinct future slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from limits import parse_many
from redis.asyncio import Redis

from service.engine.arq_api import job_key_prefix, retry_key_prefix
from service.store import keys
from service.store.scripts import LuaScript

# Added to every window's period: the time between a slot and the moment the receiver sees
# the message (the worker's wake-up, the SMTP or HTTP exchange) varies by a few ms; spacing
# ``amount + 1`` sends by the period plus this keeps that jitter from crowding one window.
MARGIN_MS = 50
LEAD_MS = 250  # a booked job comes back this early: the claim may lag its due time
LATE_MS = 25  # a booked job that comes back later than this after its slot books again
# a job's stored form must outlive its wait: arq's margin beyond when it is due (one day)
JOB_KEY_MARGIN_MS = 86_400_000

# KEYS: tracking hash, arq retry key, arq job key, then one list per window.
# ARGV: lead, late, margin, tracking hash ttl (ms), job key margin (ms), waiting_for text,
# then amount and period (ms) per window.
# Returns {1, ms to wait for its slot} (go) or {0, ms to wait in the queue} (postponed).
_TAKE = LuaScript("""
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local lead, late, margin = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local booked = redis.call('HGET', KEYS[1], 'rate_slot')
if booked then
  booked = tonumber(booked)
  if now < booked - 2 * lead then
    redis.call('DECR', KEYS[2])
    return {0, booked - lead - now}
  end
  if now <= booked + late then
    redis.call('HDEL', KEYS[1], 'rate_slot', 'waiting_for')
    return {1, math.max(0, booked - now)}
  end
end
local slot = now
for i = 4, #KEYS do
  local amount, period = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  redis.call('LTRIM', KEYS[i], -amount, -1)
  if redis.call('LLEN', KEYS[i]) >= amount then
    slot = math.max(slot, tonumber(redis.call('LINDEX', KEYS[i], 0)) + period + margin)
  end
end
for i = 4, #KEYS do
  local amount, period = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  redis.call('RPUSH', KEYS[i], slot)
  redis.call('LTRIM', KEYS[i], -amount, -1)
  redis.call('PEXPIRE', KEYS[i], slot - now + period + margin)
end
if slot - now <= lead then
  if booked then redis.call('HDEL', KEYS[1], 'rate_slot', 'waiting_for') end
  return {1, slot - now}
end
redis.call('HSET', KEYS[1], 'rate_slot', slot, 'waiting_for', ARGV[6])
if redis.call('PTTL', KEYS[1]) < slot - now + tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[1], slot - now + tonumber(ARGV[4]))
end
local keep = slot - now + tonumber(ARGV[5])
local pttl = redis.call('PTTL', KEYS[3])
if pttl > 0 and pttl < keep then redis.call('PEXPIRE', KEYS[3], keep) end
redis.call('DECR', KEYS[2])
return {0, slot - lead - now}
""")


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
    """``go``: send after ``wait`` seconds (its slot); else put the job back in the queue for
    ``wait`` seconds (its try given back, its slot booked)."""

    go: bool
    wait: float


async def take_slot(
    redis: Redis,
    job_id: str,
    scope: str,
    windows: tuple[Window, ...],
    *,
    waiting_for: str,
    ttl: int,
) -> Verdict:
    """One send for ``scope`` by the job ``job_id`` (see the module docstring); ``ttl`` is
    JOB_RESULT_TTL, the tracking hash's life beyond the wait."""
    script_keys = [keys.job_meta(job_id), retry_key_prefix + job_id, job_key_prefix + job_id]
    script_keys += [keys.rate_window(scope, w.amount, w.period_ms) for w in windows]
    args: list[Any] = [LEAD_MS, LATE_MS, MARGIN_MS, ttl * 1000, JOB_KEY_MARGIN_MS, waiting_for]
    for window in windows:
        args += [window.amount, window.period_ms]
    go, wait_ms = await _TAKE.run(redis, script_keys, args)
    return Verdict(bool(go), int(wait_ms) / 1000)
