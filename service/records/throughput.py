"""Jobs finished per second, minute and hour: compact counters for the overview's graphs.

Each job that finishes adds one to three small hashes (gathered in the worker's memory and
written once a second, service.records.tallies: no round trip per job): the second's field
of its minute's hash, the minute's field of its hour's hash, the hour's field of its UTC day's
hash; ``c`` fields count completed jobs, ``f`` fields jobs that failed for good. Every hash
expires once no graph reads it, so the memory is bounded whatever the traffic: at most 120
small fields per hash, each a Redis listpack (tests/test_throughput.py measures the bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

from service.store import keys

SECONDS_TTL = 7 * 60  # the live graph shows 5 minutes
MINUTES_TTL = 26 * 3600  # the 24-hour graph, and the hour it starts in
HOURS_TTL = 32 * 86_400  # the 30-day graph, and the day it starts in

Span = Literal["5m", "24h", "30d"]
SPANS: dict[Span, tuple[int, int]] = {  # step (seconds), points
    "5m": (1, 300),
    "24h": (60, 1440),
    "30d": (3600, 720),
}
Finished = Literal["c", "f"]  # completed, failed for good


@dataclass(frozen=True, slots=True)
class Tally:
    """The three hashes and fields one finished job adds one to."""

    keys: tuple[str, str, str]
    fields: tuple[str, str, str]


def tally(finished_ms: int, kind: Finished) -> Tally:
    """Where a job finished at ``finished_ms`` is counted, as ``kind`` (records.tallies adds
    the jobs of one second up first, so this runs once per second and kind, not per job)."""
    second = finished_ms // 1000
    minute, hour = second // 60, second // 3600
    return Tally(
        (
            keys.throughput_seconds(minute),
            keys.throughput_minutes(hour),
            keys.throughput_hours(hour // 24),
        ),
        (f"{second % 60}{kind}", f"{minute % 60}{kind}", f"{hour % 24}{kind}"),
    )


@dataclass(frozen=True, slots=True)
class Series:
    """Jobs finished per step, oldest first: ``start`` is the first step's time (s since the
    epoch), ``step`` seconds apart; the last step is the current, unfinished one."""

    span: Span
    start: int
    step: int
    completed: list[int]
    failed: list[int]


# per step: how many steps one hash holds, and the hash's key by its number
_HASHES = {
    1: (60, keys.throughput_seconds),
    60: (60, keys.throughput_minutes),
    3600: (24, keys.throughput_hours),
}


async def series(redis: Redis, span: Span, now: float) -> Series:
    """The ``span`` graph's counts up to ``now`` (s since the epoch), in one round trip."""
    step, points = SPANS[span]
    per_hash, key = _HASHES[step]
    last = int(now) // step
    first = last - points + 1
    groups = list(range(first // per_hash, last // per_hash + 1))
    async with redis.pipeline(transaction=False) as pipe:
        for group in groups:
            pipe.hgetall(key(group))
        replies: list[dict[bytes, bytes]] = await pipe.execute()
    completed, failed = [0] * points, [0] * points
    for group, reply in zip(groups, replies, strict=True):
        for raw_field, raw_value in reply.items():
            text = raw_field.decode()
            index = group * per_hash + int(text[:-1]) - first
            if 0 <= index < points:
                (completed if text[-1] == "c" else failed)[index] += int(raw_value)
    return Series(span, first * step, step, completed, failed)
