"""The graphs' counts, gathered in the worker's memory and written to Redis once a second.

Written in each attempt's end script, they cost Redis six HINCRBYs per job and the worker the
arguments to build them: no-op jobs drained about 12% slower (bench/micro.py), over the 5%
the issue allows for the dashboard's bookkeeping. Gathered here, a job costs a few dict
increments; once a second one pipeline adds what was gathered to the hashes of
service.records.throughput and service.records.function_stats (an HINCRBY per field, an
EXPIRE per hash) and publishes a ``graphs`` event on the events channel, which tells open
overviews to redraw with the new counts. A stopping worker writes what it still holds; one
killed with SIGKILL loses at most its last second of counts. While Redis does not answer the
counts are kept and written with the next second's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.records import events, function_stats, throughput
from service.records.throughput import Finished
from service.store import keys

FLUSH_SECONDS = 1.0
TICK_CHANNEL = keys.job_events("graphs")  # on the pattern the live overview listens to
_TTLS = (throughput.SECONDS_TTL, throughput.MINUTES_TTL, throughput.HOURS_TTL)

logger = logging.getLogger("jobservice.worker")


class Tallies:
    """Counts not yet written: (hash, field) -> how many, and each hash's TTL."""

    def __init__(self) -> None:
        self._pending: Counter[tuple[str, str]] = Counter()
        self._ttls: dict[str, int] = {}

    def __len__(self) -> int:
        """How many fields wait to be written."""
        return len(self._pending)

    def ended(
        self,
        finished_ms: int,
        kind: Finished | None,
        sample: function_stats.Sample,
    ) -> None:
        """An attempt ended at ``finished_ms``: the job counted as ``kind`` (None: it did not
        end the job), the attempt as ``sample`` (empty fields: not sampled)."""
        pending = self._pending
        if kind is not None:
            where = throughput.tally(finished_ms, kind)
            for key, field, ttl in zip(where.keys, where.fields, _TTLS, strict=True):
                pending[key, field] += 1
                self._ttls[key] = ttl
        if sample.outcome:
            for field in (sample.outcome, sample.duration, sample.wait):
                if field:
                    pending[sample.key, field] += 1
            self._ttls[sample.key] = function_stats.TTL

    async def flush(self, redis: Redis) -> bool:
        """Write what was gathered, in one round trip; False if there was nothing. Counts
        Redis refused stay for the next try."""
        if not self._pending:
            return False
        pending, ttls = self._pending, self._ttls
        self._pending, self._ttls = Counter(), {}
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for (key, field), count in pending.items():
                    pipe.hincrby(key, field, count)
                for key, ttl in ttls.items():
                    pipe.expire(key, ttl)
                pipe.publish(TICK_CHANNEL, events.encode("graphs", {}))
                await pipe.execute()
        except (RedisError, OSError):
            self._pending.update(pending)
            self._ttls = {**ttls, **self._ttls}
            raise
        return True

    async def run(self, redis: Redis) -> None:
        """Flush once a second until cancelled (the worker's shutdown flushes once more); an
        outage is logged once, as it starts."""
        failing = False
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush(redis)
            except (RedisError, OSError) as exc:
                if not failing:
                    logger.warning("graph counts not written, kept until Redis answers: %s", exc)
                failing = True
            else:
                failing = False


def start(redis: Redis) -> tuple[Tallies, asyncio.Task[None]]:
    """A worker's tallies and the task that writes them."""
    tallies = Tallies()
    return tallies, asyncio.create_task(tallies.run(redis), name="graph-tallies")


async def stop(tallies: Tallies, task: asyncio.Task[None], redis: Redis) -> None:
    """Stop writing every second, and write what is left."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with contextlib.suppress(RedisError, OSError):  # Redis may be the reason we stop
        await tallies.flush(redis)
