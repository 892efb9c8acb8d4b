"""Per-day activity counters in Redis, the daily report's source."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from service.store import keys

STATS_TTL_SECONDS = 8 * 86_400  # a week of history, plus a day for the report to read it


def today(tz: ZoneInfo) -> date:
    return datetime.now(tz).date()


async def count(redis: Redis, tz: ZoneInfo, **increments: int) -> None:
    """Add to today's counters, e.g. ``count(redis, tz, emails_sent=1)``."""
    async with redis.pipeline(transaction=False) as pipe:
        add(pipe, tz, **increments)
        await pipe.execute()


def add(pipe: Pipeline, tz: ZoneInfo, **increments: int) -> None:
    """Queue on ``pipe`` what :func:`count` does, to share a round trip with other writes."""
    key = keys.daily_stats(today(tz))
    for field, amount in increments.items():
        pipe.hincrby(key, field, amount)
    pipe.expire(key, STATS_TTL_SECONDS)


async def read(redis: Redis, day: date) -> dict[str, int]:
    raw: dict[bytes, bytes] = await redis.hgetall(keys.daily_stats(day))  # type: ignore[misc]
    return {field.decode(): int(value) for field, value in raw.items()}
