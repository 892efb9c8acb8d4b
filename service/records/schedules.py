"""What is known about each cron schedule beside arq's keys: whether it is paused, its
latest runs, and when it runs next.

A pause is one field of a hash (keys.paused_schedules), read by the cron wrapper of every
worker (service.worker.schedules) as a run starts, so every worker obeys it at once and it
survives restarts. The runs are a list per schedule, capped at RUNS_KEPT entries of about
150 bytes (JSON): 20 runs, about 3 KB per schedule, whatever the service's age.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from redis.asyncio import Redis

from service.engine.arq_api import next_cron
from service.store import keys

RUNS_KEPT = 20
Outcome = Literal["success", "failure", "retry", "interrupted", "skipped"]


@dataclass(frozen=True, slots=True)
class ScheduleRun:
    """One run of a schedule; times in ms since the epoch; ``skipped``: it was paused."""

    job_id: str
    outcome: Outcome
    started_at: int
    finished_at: int
    error: str | None = None

    @property
    def duration_ms(self) -> int:
        return self.finished_at - self.started_at


def due_times(fields: dict[str, Any], after: datetime) -> Iterator[datetime]:
    """A schedule's times after ``after`` (arq's cron ``fields``), the instants arq's cron
    computes (so the same run ids), each in ``after``'s zone with its real offset: across a
    change of clocks 00:00 stays 00:00 local (its UTC time moves), and a time the spring
    change skips (02:30) is the instant arq runs it, an hour later (03:30 summer time)."""
    moment = after
    while True:
        moment = next_cron(moment, **fields)
        yield moment.astimezone(UTC).astimezone(after.tzinfo)


async def pause(redis: Redis, cron_name: str, now_ms: int) -> int:
    """Pause one schedule (a paused one keeps its first time); when it was paused."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hsetnx(keys.paused_schedules(), cron_name, str(now_ms))
        pipe.hget(keys.paused_schedules(), cron_name)
        _, paused_at = await pipe.execute()
    return int(paused_at)


async def resume(redis: Redis, cron_name: str) -> bool:
    """Let one schedule run again; False when it was not paused."""
    return bool(await redis.hdel(keys.paused_schedules(), cron_name))  # type: ignore[misc]


async def paused(redis: Redis) -> dict[str, int]:
    """Every paused schedule (cron name -> when, ms)."""
    raw: dict[bytes, bytes] = await redis.hgetall(keys.paused_schedules())  # type: ignore[misc]
    return {name.decode(): int(at) for name, at in raw.items()}


async def record_run(redis: Redis, cron_name: str, run: ScheduleRun) -> None:
    """Add ``run`` at the head of the schedule's list, dropping what is past RUNS_KEPT."""
    key = keys.schedule_runs(cron_name)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.lpush(key, json.dumps(asdict(run), separators=(",", ":")))
        pipe.ltrim(key, 0, RUNS_KEPT - 1)
        await pipe.execute()


async def recent_runs(redis: Redis, cron_names: list[str]) -> dict[str, list[ScheduleRun]]:
    """Each schedule's latest runs, newest first; entries that do not parse are left out."""
    async with redis.pipeline(transaction=False) as pipe:
        for name in cron_names:
            pipe.lrange(keys.schedule_runs(name), 0, RUNS_KEPT - 1)
        lists: list[list[bytes]] = await pipe.execute()
    found: dict[str, list[ScheduleRun]] = {}
    for name, entries in zip(cron_names, lists, strict=True):
        runs = []
        for entry in entries:
            try:
                runs.append(ScheduleRun(**json.loads(entry)))
            except (ValueError, TypeError):
                continue
        found[name] = runs
    return found
