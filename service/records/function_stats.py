"""Per function, the last hour: jobs finished, failure rate, duration and queue-wait percentiles.

Each attempt that ends with an outcome (success, failure, retry) adds to its function's hash of
the minute (gathered in the worker and written once a second, service.records.tallies): its
outcome's count (``s``, ``f``, ``r``), and the latency buckets (service.records.latency) of its
run time (``d<bucket>``) and of its wait in the queue from when it was due to its start
(``w<bucket>``). A hash expires after a little over an hour, and its size depends on the spread
of the function's latencies (a few buckets each, usually), never on the traffic.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from redis.asyncio import Redis

from service.records import latency
from service.store import keys
from service.store.scripts import LuaScript

TTL = 3600 + 120  # the last hour, and the minute it starts in
WINDOW_MINUTES = 60
Outcome = Literal["success", "failure", "retry"]
LETTERS: dict[Outcome, str] = {"success": "s", "failure": "f", "retry": "r"}


@dataclass(slots=True)
class FunctionStats:
    """One function's last hour; seconds, None when no attempt was timed."""

    function: str
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    durations: Counter[int] = field(default_factory=Counter)
    waits: Counter[int] = field(default_factory=Counter)

    @property
    def jobs(self) -> int:
        """Jobs finished: succeeded or failed for good (a retry is not an end)."""
        return self.succeeded + self.failed

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.jobs if self.jobs else None

    @property
    def duration_p50(self) -> float | None:
        return latency.percentile(self.durations, 0.50)

    @property
    def duration_p95(self) -> float | None:
        return latency.percentile(self.durations, 0.95)

    @property
    def wait_p95(self) -> float | None:
        return latency.percentile(self.waits, 0.95)


def _add(stats: FunctionStats, kind: str, value: int) -> None:
    if kind == "s":
        stats.succeeded += value
    elif kind == "f":
        stats.failed += value
    elif kind == "r":
        stats.retried += value
    elif kind[:1] == "d" and kind[1:].isdigit():
        stats.durations[int(kind[1:])] += value
    elif kind[:1] == "w" and kind[1:].isdigit():
        stats.waits[int(kind[1:])] += value


# KEYS: WINDOW_MINUTES hashes per function, one function after the other; ARGV: WINDOW_MINUTES.
# Returns, per function, its fields summed over its hashes as a flat field/value list: the
# sums are made where the data is, so the web app parses a few short lists, not 60 per function.
_SUMS = LuaScript("""
local per = tonumber(ARGV[1])
local out = {}
for f = 0, #KEYS / per - 1 do
  local sums, order, flat = {}, {}, {}
  for i = 1, per do
    local found = redis.call('HGETALL', KEYS[f * per + i])
    for j = 1, #found, 2 do
      local field = found[j]
      if sums[field] == nil then
        sums[field] = 0
        order[#order + 1] = field
      end
      sums[field] = sums[field] + tonumber(found[j + 1])
    end
  end
  for _, field in ipairs(order) do
    flat[#flat + 1] = field
    flat[#flat + 1] = sums[field]
  end
  out[#out + 1] = flat
end
return out
""")


async def last_hour(
    redis: Redis, functions: Iterable[str], now: float | None = None
) -> list[FunctionStats]:
    """Each of ``functions`` with an attempt in the last 60 minutes (this one included), by
    name; one script call."""
    minute = int(time.time() if now is None else now) // 60
    names = sorted(functions)
    if not names:
        return []
    script_keys = [
        keys.function_minute(name, minute - back)
        for name in names
        for back in range(WINDOW_MINUTES)
    ]
    replies: list[list[bytes | int]] = await _SUMS.run(redis, script_keys, [WINDOW_MINUTES])
    found = []
    for name, flat in zip(names, replies, strict=True):
        stats = FunctionStats(name)
        for at in range(0, len(flat), 2):
            field = flat[at]
            _add(
                stats, field.decode() if isinstance(field, bytes) else str(field), int(flat[at + 1])
            )
        if stats.succeeded or stats.failed or stats.retried:
            found.append(stats)
    return found
