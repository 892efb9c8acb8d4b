"""The graphs' counts, gathered in the worker's memory and written to Redis once a second.

Written in each attempt's end script, they cost Redis six HINCRBYs per job and the worker the
arguments to build them: no-op jobs drained about 12% slower (bench/micro.py), over the 5%
the issue allows for the dashboard's bookkeeping. Here an attempt appends one tuple to a list;
once a second they are counted per hash field and one pipeline adds the counts to the hashes of
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

from service.records import events, function_stats, latency, throughput
from service.records.function_stats import Outcome
from service.records.throughput import Finished
from service.store import keys

FLUSH_SECONDS = 1.0
_TTLS = (throughput.SECONDS_TTL, throughput.MINUTES_TTL, throughput.HOURS_TTL)

logger = logging.getLogger("jobservice.worker")


# what one ended attempt leaves: finished (ms), counted as (None: not), function, outcome,
# run and wait (seconds; None: not timed)
_Ended = tuple[int, Finished | None, str, Outcome, float | None, float | None]


class Tallies:
    """Attempts ended since the last write, and counts Redis refused then.

    An attempt only appends a tuple (the worker's hot path); the once-a-second write turns
    them into counts per hash field, most of them shared by the attempts of one second."""

    def __init__(self) -> None:
        self._ended: list[_Ended] = []
        self._refused: Counter[tuple[str, str]] = Counter()
        self._ttls: dict[str, int] = {}

    def __len__(self) -> int:
        """Attempts and refused fields waiting to be written."""
        return len(self._ended) + len(self._refused)

    def ended(
        self,
        finished_ms: int,
        kind: Finished | None,
        function: str,
        outcome: Outcome,
        run: float | None,
        wait: float | None,
    ) -> None:
        """An attempt of ``function`` ended at ``finished_ms`` with ``outcome``, the job
        counted as ``kind`` (None: the attempt did not end it), after ``run`` seconds of run
        time and ``wait`` in the queue (None: not timed, a failure arq decided)."""
        self._ended.append((finished_ms, kind, function, outcome, run, wait))

    def _counts(self) -> tuple[Counter[tuple[str, str]], dict[str, int]]:
        """What to add to which hash field, and each hash's TTL; forgets the attempts."""
        ended, self._ended = self._ended, []
        jobs: Counter[tuple[int, Finished]] = Counter()
        samples: Counter[tuple[str, int, str]] = Counter()
        for finished_ms, kind, function, outcome, run, wait in ended:
            if kind is not None:
                jobs[finished_ms // 1000, kind] += 1
            minute = finished_ms // 60_000
            samples[function, minute, function_stats.LETTERS[outcome]] += 1
            if run is not None and wait is not None:
                samples[function, minute, f"d{latency.bucket(run)}"] += 1
                samples[function, minute, f"w{latency.bucket(wait)}"] += 1
        counts, ttls = self._refused, self._ttls
        self._refused, self._ttls = Counter(), {}
        for (second, kind), count in jobs.items():
            where = throughput.tally(second * 1000, kind)
            for key, field, ttl in zip(where.keys, where.fields, _TTLS, strict=True):
                counts[key, field] += count
                ttls[key] = ttl
        for (function, minute, field), count in samples.items():
            key = keys.function_minute(function, minute)
            counts[key, field] += count
            ttls[key] = function_stats.TTL
        return counts, ttls

    async def flush(self, redis: Redis) -> bool:
        """Write what was gathered, in one round trip; False if there was nothing. Counts
        Redis refused stay for the next try."""
        if not self:
            return False
        counts, ttls = self._counts()
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for (key, field), count in counts.items():
                    pipe.hincrby(key, field, count)
                for key, ttl in ttls.items():
                    pipe.expire(key, ttl)
                # on the pattern the live overview listens to
                pipe.publish(
                    keys.job_events("graphs", keys.database_of(redis)), events.encode("graphs", {})
                )
                await pipe.execute()
        except (RedisError, OSError):
            self._refused.update(counts)
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
