"""Circuit breakers per destination (a webhook host, the SMTP server), kept in Redis so that
every worker obeys the same one.

A destination's breaker is a hash (keys.breaker) that exists only while there is something to
remember: consecutive transient failures (closed), or an outage (open, half-open). A healthy
destination has no key at all, so checking it costs one script call that finds nothing.

- closed: jobs run; each transient failure adds one, a success forgets them all;
- open: after ``threshold`` consecutive failures, or at once when the destination says it is
  unavailable (HTTP 429/503 with Retry-After, SMTP 421); its jobs wait, unstarted, until
  ``next_probe``;
- half-open: the first job admitted after ``next_probe`` is the probe, the only one let
  through; its success closes the breaker (the hash is deleted), its transient failure opens
  it again with the cool-down doubled (up to the cap). A probe whose worker died is replaced
  once its lease (the job's time limit) has run out.

Each step is one Lua script, so two workers never both take the probe. The jobs held back are
listed (keys.breaker_waiting) so that a close, by a probe or an operator, makes them due at
once rather than each waiting out its postponement. Hosts are user input:
at most ``max_tracked`` destinations are remembered at once (a new one beyond that is not
tracked; its jobs simply run and retry as without breakers), and a breaker untouched for
IDLE_SECONDS after its next probe time expires.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

from service.engine.arq_api import retry_key_prefix
from service.records import events
from service.store import keys
from service.store.scripts import LuaScript

# what a destination's name may be: "webhook:<host>" or "smtp" (the one SMTP server, unnamed:
# its address is internal, and these names reach API answers and the dashboard)
DESTINATION_PATTERN = re.compile(r"webhook:[^\s/]{1,290}|smtp")
SMTP = "smtp"
IDLE_SECONDS = 3600  # a breaker nobody touched for this long after its next probe is forgotten
State = Literal["closed", "open", "half_open"]
Transition = Literal["opened", "closed", "none"]

# KEYS: breaker, job meta, job's retry counter, waiting jobs. ARGV: now ms, job id, probe lease ms,
# destination, meta ttl. Replies {verdict, n}: {"go", failures}, {"probe", 0}, {"wait", ms}.
_ADMIT = LuaScript("""
local state = redis.call('HGET', KEYS[1], 'state')
local now = tonumber(ARGV[1])
local function go(verdict, n)
  redis.call('HDEL', KEYS[2], 'waiting_for')
  return {verdict, n}
end
local function probe()
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe', ARGV[2],
    'probe_until', now + tonumber(ARGV[3]))
  return go('probe', 0)
end
if not state then return go('go', 0) end
if state == 'closed' then
  return go('go', tonumber(redis.call('HGET', KEYS[1], 'failures') or '0'))
end
local wait
if state == 'open' then
  local next_probe = tonumber(redis.call('HGET', KEYS[1], 'next_probe'))
  if now >= next_probe then return probe() end
  wait = next_probe - now
else
  local until_ms = tonumber(redis.call('HGET', KEYS[1], 'probe_until'))
  if now >= until_ms or redis.call('HGET', KEYS[1], 'probe') == ARGV[2] then return probe() end
  wait = math.min(until_ms - now, tonumber(redis.call('HGET', KEYS[1], 'cooldown')))
end
redis.call('DECR', KEYS[3])
redis.call('HSET', KEYS[2], 'waiting_for', ARGV[4])
if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ARGV[5]) end
redis.call('SADD', KEYS[4], ARGV[2])
redis.call('PEXPIRE', KEYS[4], math.max(redis.call('PTTL', KEYS[1]), wait + 1000))
return {'wait', wait}
""")

# KEYS: breaker, index. ARGV: now ms, job id, threshold, cool-down ms, cap ms, retry-after ms
# (0: none), unavailable (1/0), max tracked, idle ms, destination.
# Reply {transition, state}: transition "opened" or "none"; state after ("" if not tracked).
_FAILED = LuaScript("""
local now = tonumber(ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[9]))
  if not redis.call('ZSCORE', KEYS[2], ARGV[10])
     and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[8]) then
    return {'none', ''}
  end
  state = 'closed'
  redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0)
end
local retry_after = tonumber(ARGV[6])
local function open(cooldown)
  local next_probe = now + math.max(cooldown, retry_after)
  redis.call('HSET', KEYS[1], 'state', 'open', 'cooldown', cooldown, 'next_probe', next_probe,
    'probe', '', 'probe_until', 0)
  redis.call('HSETNX', KEYS[1], 'opened_at', now)
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local transition = 'none'
if state == 'closed' then
  if ARGV[7] == '1' or failures >= tonumber(ARGV[3]) then
    open(tonumber(ARGV[4]))
    transition = 'opened'
    state = 'open'
  end
elseif state == 'half_open' then
  if redis.call('HGET', KEYS[1], 'probe') == ARGV[2] then
    local cooldown = math.min(tonumber(redis.call('HGET', KEYS[1], 'cooldown')) * 2,
      tonumber(ARGV[5]))
    open(cooldown)
    state = 'open'
  end
elseif retry_after > 0 then
  local later = now + retry_after
  if later > tonumber(redis.call('HGET', KEYS[1], 'next_probe')) then
    redis.call('HSET', KEYS[1], 'next_probe', later)
  end
end
local next_probe = tonumber(redis.call('HGET', KEYS[1], 'next_probe') or now)
redis.call('PEXPIRE', KEYS[1], math.max(next_probe - now, 0) + tonumber(ARGV[9]))
redis.call('ZADD', KEYS[2], now, ARGV[10])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[9]) + 86400000)
return {transition, state}
""")

# Closing a breaker puts the jobs it held back at the head of the queue (those still in it),
# due now, instead of each waiting out the rest of its postponement.
# KEYS: breaker, index, waiting jobs, then every queue key a held job may wait in (XX: only
# where it is). ARGV: destination, now ms.
_FORGET = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local waiting = redis.call('SMEMBERS', KEYS[3])
for i = 1, #waiting, 500 do
  local batch = {}
  for j = i, math.min(i + 499, #waiting) do
    batch[#batch + 1] = ARGV[2]
    batch[#batch + 1] = waiting[j]
  end
  for k = 4, #KEYS do redis.call('ZADD', KEYS[k], 'XX', unpack(batch)) end
end
redis.call('DEL', KEYS[3])
"""

# Reply: the state it closed from ("" if none). A success while open is a job admitted
# before the breaker opened: only a probe reopens it.
_SUCCEEDED = LuaScript(
    """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'open' then return '' end
"""
    + _FORGET
    + "return state"
)

# KEYS: breaker. ARGV: job id. The probe ended neither way (cancelled, a permanent failure
# raised before the destination was reached): the next job admitted is the probe.
_RELEASED = LuaScript("""
if redis.call('HGET', KEYS[1], 'state') == 'half_open'
   and redis.call('HGET', KEYS[1], 'probe') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'probe_until', 0)
end
return 0
""")

# Reply: the state it was in ("" if none).
_CLOSE = LuaScript(
    """
local state = redis.call('HGET', KEYS[1], 'state') or ''
"""
    + _FORGET
    + "return state"
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a job may run now: as the probe, with ``failures`` recorded, or not before
    ``wait`` seconds."""

    probe: bool = False
    failures: int = 0
    wait: float | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """A transient failure against a destination, as the breaker counts it."""

    retry_after: float | None = None  # seconds the destination asked for
    unavailable: bool = False  # it said so itself (HTTP 429/503 with Retry-After, SMTP 421)


@dataclass(frozen=True, slots=True)
class Limits:
    """The settings a failure is judged by (BREAKER_*), and the probe's lease."""

    threshold: int
    cooldown: float
    cooldown_max: float
    max_tracked: int


@dataclass(frozen=True, slots=True)
class Breaker:
    """One tracked destination's breaker, as the dashboard, /health and the API show it."""

    destination: str
    state: State
    failures: int
    opened_at: int | None  # ms; None while closed
    next_probe: int | None  # ms; None while closed or while a probe runs
    cooldown: float | None  # seconds

    @property
    def label(self) -> str:
        return describe(self.destination)


def webhook_destination(host: str) -> str:
    return f"webhook:{host}"


def smtp_destination() -> str:
    """The SMTP server's breaker: not named by its host and port, which clients never see."""
    return SMTP


def describe(destination: str) -> str:
    """What a person reads: "webhook host example.com", "SMTP server"."""
    kind, _, name = destination.partition(":")
    if kind == "webhook":
        return f"webhook host {name}"
    if destination == SMTP:
        return "SMTP server"
    return destination


def kind_of(destination: str) -> str:
    """``webhook`` or ``smtp``: the metrics' counters are labelled by it (bounded)."""
    return destination.partition(":")[0]


async def admit(
    redis: Redis, destination: str, job_id: str, now_ms: int, lease: float, meta_ttl: int
) -> Verdict:
    """May this job run now? A job told to wait gets its try back and its status says whom it
    waits for (``waiting_for``), in the same script call."""
    keys_ = [
        keys.breaker(destination),
        keys.job_meta(job_id),
        retry_key_prefix + job_id,
        keys.breaker_waiting(destination),
    ]
    reply = await _ADMIT.run(
        redis,
        keys_,
        [
            now_ms,
            job_id,
            int(lease * 1000),
            f"{describe(destination)} (circuit breaker open)",
            meta_ttl,
        ],
    )
    verdict, number = _text(reply[0]), int(reply[1])
    if verdict == "wait":
        return Verdict(wait=number / 1000)
    return Verdict(probe=verdict == "probe", failures=number)


async def failed(
    redis: Redis, destination: str, job_id: str, now_ms: int, failure: Failure, limits: Limits
) -> tuple[Transition, str]:
    """Count one transient failure; ("opened", "open") when this one opened the breaker."""
    retry_after = 0 if failure.retry_after is None else int(failure.retry_after * 1000)
    reply = await _FAILED.run(
        redis,
        [keys.breaker(destination), keys.breakers()],
        [
            now_ms,
            job_id,
            limits.threshold,
            int(limits.cooldown * 1000),
            int(limits.cooldown_max * 1000),
            retry_after,
            int(failure.unavailable),
            limits.max_tracked,
            IDLE_SECONDS * 1000,
            destination,
        ],
    )
    if _text(reply[0]) == "opened":
        await _changed(redis)
        return "opened", _text(reply[1])
    return "none", _text(reply[1])


def _forget_keys(destination: str, queues: Sequence[str]) -> list[str]:
    return [keys.breaker(destination), keys.breakers(), keys.breaker_waiting(destination), *queues]


async def succeeded(
    redis: Redis, destination: str, queues: Sequence[str], now_ms: int
) -> Transition:
    """A success: the failures are forgotten; "closed" when it closed a half-open breaker
    (the jobs it held back are due at once)."""
    before = _text(
        await _SUCCEEDED.run(redis, _forget_keys(destination, queues), [destination, now_ms])
    )
    if before == "half_open":
        await _changed(redis)
        return "closed"
    return "none"


async def released(redis: Redis, destination: str, job_id: str) -> None:
    """The probe ended without telling anything: the next job admitted is the probe."""
    await _RELEASED.run(redis, [keys.breaker(destination)], [job_id])


async def close(redis: Redis, destination: str, queues: Sequence[str], now_ms: int) -> bool:
    """An operator's "close now": forget the breaker, its held jobs due at once; whether it
    was open or half-open."""
    before = _text(
        await _CLOSE.run(redis, _forget_keys(destination, queues), [destination, now_ms])
    )
    if before:
        await _changed(redis)
    return before in ("open", "half_open")


async def tracked(redis: Redis) -> list[Breaker]:
    """Every tracked breaker, open ones first, then by destination."""
    names = [_text(raw) for raw in await redis.zrange(keys.breakers(), 0, -1)]
    if not names:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.breaker(name))
        hashes = await pipe.execute()
    found = [
        _breaker(name, {_text(k): _text(v) for k, v in raw.items()})
        for name, raw in zip(names, hashes, strict=True)
        if raw
    ]
    return sorted(found, key=lambda b: (b.state == "closed", b.destination))


async def open_ones(redis: Redis) -> list[Breaker]:
    """The breakers that hold jobs back now (open or half-open)."""
    return [breaker for breaker in await tracked(redis) if breaker.state != "closed"]


def _breaker(destination: str, fields: Mapping[str, str]) -> Breaker:
    state = fields.get("state", "closed")
    if state not in ("closed", "open", "half_open"):
        state = "closed"
    is_open = state != "closed"
    opened_at = fields.get("opened_at")
    cooldown = fields.get("cooldown")
    return Breaker(
        destination=destination,
        state=state,  # type: ignore[arg-type]  # checked just above
        failures=int(fields.get("failures", 0)),
        opened_at=int(opened_at) if is_open and opened_at else None,
        next_probe=int(fields["next_probe"]) if state == "open" else None,
        cooldown=int(cooldown) / 1000 if is_open and cooldown else None,
    )


async def _changed(redis: Redis) -> None:
    """Tell open overviews to redraw (on the pattern they listen to)."""
    await events.publish(redis, "breakers", "breakers", {})


def _text(raw: bytes | str | int) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)
