"""Pausing the queue: every worker stops taking jobs while a flag in Redis says so.

The flag is one key per queue (keys.paused) holding when the pause began (ms). The engine's
claim script (service.engine.claim) reads it in the very call that would take jobs, so a
paused queue costs the workers no extra round trip, and since it lives in Redis, not in a
worker, it holds for every worker at once and outlives their restarts. Enqueues do not look
at it: the API keeps accepting jobs (cron runs too, which arq queues), and they wait in the
queue. Jobs already running are left to finish. Resuming deletes the flag and wakes a worker.

Draining is pausing, then waiting until no job runs, read from the running set (written when
an attempt starts, service.records.attempt_scripts) confirmed by arq's in-progress locks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from service.engine.queue_counts import queue_counts
from service.queue.enqueue import wake_a_worker
from service.records.times import now_ms
from service.store import keys
from service.store.scripts import LuaScript

# A job claimed in the instant before the pause shows in the running set when its attempt
# starts, one round trip later; a drain trusts "nothing runs" only once the pause is older.
SETTLE_SECONDS = 1.0
DRAIN_POLL_SECONDS = 0.2  # how often a drain looks at the running set

# KEYS: flag. ARGV: now (ms). A second pause keeps the first one's time.
_PAUSE = LuaScript("""
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
""")

# KEYS: flag, wake list. Returns 1 if the queue was paused. Wakes an idle worker at once,
# rather than at its next timed read (up to half a second).
_RESUME = LuaScript(f"""
local was = redis.call('DEL', KEYS[1])
{wake_a_worker(2)}
return was
""")


@dataclass(frozen=True, slots=True)
class PauseState:
    """Whether the queue is paused, and since when (ms since the epoch)."""

    paused_at_ms: int | None

    @property
    def paused(self) -> bool:
        return self.paused_at_ms is not None


@dataclass(frozen=True, slots=True)
class DrainState:
    """A drain's outcome: the pause, how many jobs still run, and whether the pause is old
    enough (SETTLE_SECONDS) for "none" to mean that no claim made before it is still starting."""

    pause: PauseState
    running: int
    settled: bool

    @property
    def drained(self) -> bool:
        return self.settled and self.running == 0


def _state(raw: bytes | str | None) -> PauseState:
    return PauseState(int(raw) if raw is not None else None)


async def pause(redis: Redis, queue_name: str) -> PauseState:
    """Stop every worker taking jobs from ``queue_name``; pausing a paused queue changes
    nothing (its pause keeps its first time)."""
    now_ms = int(time.time() * 1000)
    return _state(await _PAUSE.run(redis, [keys.paused(queue_name)], [now_ms]))


async def resume(redis: Redis, queue_name: str) -> bool:
    """Let workers take jobs again; False when the queue was not paused."""
    flag, wake = keys.paused(queue_name), keys.wake(queue_name)
    return int(await _RESUME.run(redis, [flag, wake], [])) == 1


async def pause_state(redis: Redis, queue_name: str) -> PauseState:
    return _state(await redis.get(keys.paused(queue_name)))


async def running_count(redis: Redis, queues: str | Sequence[str]) -> int:
    """Jobs some worker runs now: the running set's entries whose arq lock is still held
    (a killed worker's entry counts until its lock expires, as its job may still run), as
    /health counts them (service.engine.queue_counts), in any of ``queues``."""
    return (await queue_counts(redis, queues, now_ms())).running


async def drain(
    redis: Redis, queue_name: str, *, within: float, queues: Sequence[str] = ()
) -> DrainState:
    """Pause, then wait up to ``within`` seconds until no job runs in ``queue_name`` or any
    of ``queues`` (every named queue and priority: the pause covers them all); the queue
    stays paused either way, and the answer says how many still run."""
    state = await pause(redis, queue_name)
    assert state.paused_at_ms is not None
    settled_at = state.paused_at_ms / 1000 + SETTLE_SECONDS
    deadline = time.monotonic() + within
    while True:
        running = await running_count(redis, list(dict.fromkeys([queue_name, *queues])))
        settled = time.time() >= settled_at
        if (running == 0 and settled) or time.monotonic() >= deadline:
            return DrainState(state, running, settled)
        await asyncio.sleep(DRAIN_POLL_SECONDS)
