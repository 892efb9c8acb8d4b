"""How many attempts of one job may run at once per key in this worker (``Job.slots``).

Webhooks to a target that never answers each hold a worker slot for WEBHOOK_TIMEOUT: a few a
second kept all 50 busy and every other job waited behind them (an email 9.8 s instead of
0.06 s). So the webhooks to one host may hold at most WEBHOOK_HOST_CONCURRENCY slots at once.
A job over its key's limit is not run: the claim's try is given back (arq's retry counter,
decremented), and the job goes back to the queue about a second later
(service.engine.postpone), so waiting uses up neither a try nor a slot. It never starts, so it
writes no attempt and no log line; the worker's metrics count the postponement.

The count is this worker's own, in memory: the harm is one worker's slots all taken, which a
per-worker count prevents at no cost; a count across workers would cost two Redis round trips
per webhook and leases for workers that die, and limiting what all workers send one host
belongs to rate limits per target, not to this floor.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Awaitable, Callable
from typing import Any

from service.engine.arq_api import retry_key_prefix
from service.engine.postpone import Postponed
from service.runtime import Job, JobContext
from settings import Settings

JobFunction = Callable[..., Awaitable[Any]]

REASON = "host_slots"  # the postponement's label in the worker's metrics
WAIT = 1.0  # seconds a job over its limit waits in the queue, give or take half (jitter)


class KeyedSlots:
    """Attempts running now in this worker, per key."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}

    def take(self, key: str, limit: int) -> bool:
        """Hold one of ``key``'s ``limit`` slots if one is free (``limit`` 0: no limit)."""
        held = self._held.get(key, 0)
        if limit and held >= limit:
            return False
        self._held[key] = held + 1
        return True

    def give_back(self, key: str) -> None:
        held = self._held[key] - 1
        if held:
            self._held[key] = held
        else:
            del self._held[key]

    def held(self, key: str) -> int:
        return self._held.get(key, 0)


def limited(job: Job, settings: Settings, slots: KeyedSlots, fn: JobFunction) -> JobFunction:
    """``fn`` (the job, wrapped) run only while its key has a free slot; else postponed."""
    limit = job.slots
    if limit is None:
        return fn
    per_key = limit.per_key(settings)

    @functools.wraps(fn)
    async def run(ctx: JobContext, /, *args: Any, **kwargs: Any) -> Any:
        key = limit.key(kwargs)
        if key is None:
            return await fn(ctx, *args, **kwargs)
        if not slots.take(key, per_key):
            await ctx["redis"].decr(retry_key_prefix + ctx["job_id"])  # this was not a try
            ctx["metrics"].postponed.labels(job.name, REASON).inc()
            raise Postponed(defer=WAIT * random.uniform(0.5, 1.5))
        try:
            return await fn(ctx, *args, **kwargs)
        finally:
            slots.give_back(key)

    return run
