"""Per-day activity counters in Redis, the daily report's source."""

from __future__ import annotations

import functools
import time
from datetime import date, datetime
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from service.store import keys

STATS_TTL_SECONDS = 8 * 86_400  # a week of history, plus a day for the report to read it


def today(tz: ZoneInfo) -> date:
    """Today in ``tz`` (CRON_TIMEZONE): the day a counter written now counts for."""
    return _day_of(int(time.time()), tz)


@functools.lru_cache(maxsize=4)
def _day_of(second: int, tz: ZoneInfo) -> date:
    """Found once a second, not once per attempt (a time zone's days begin on whole seconds)."""
    return datetime.fromtimestamp(second, tz).date()


async def count_today(redis: Redis, tz: ZoneInfo, **increments: int) -> None:
    """Add to today's counters, e.g. ``count_today(redis, tz, emails_sent=1)``."""
    key = keys.daily_stats(today(tz))
    async with redis.pipeline(transaction=False) as pipe:
        for field, amount in increments.items():
            pipe.hincrby(key, field, amount)
        pipe.expire(key, STATS_TTL_SECONDS)
        await pipe.execute()


async def day_counts(redis: Redis, day: date) -> dict[str, int]:
    """Every counter of ``day``, e.g. ``{"emails_sent": 12, "job:send_email:success": 12}``."""
    raw: dict[bytes, bytes] = await redis.hgetall(keys.daily_stats(day))  # type: ignore[misc]
    return {field.decode(): int(value) for field, value in raw.items()}
