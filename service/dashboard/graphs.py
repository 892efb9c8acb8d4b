"""The throughput graphs and per-function figures, as the overview and GET /stats/* show them.

One read model for both, so the page and the API cannot disagree: the three spans of jobs
finished (service.records.throughput) and each function's last hour
(service.records.function_stats), shaped as plain JSON-ready dicts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from service.records import function_stats, latency, throughput
from service.records.throughput import SPANS, Span


def series_document(series: throughput.Series) -> dict[str, Any]:
    """``{"range", "step", "start", "completed", "failed"}``: counts per step from ``start``
    (seconds since the epoch), oldest first; the last step is still running."""
    return {
        "range": series.span,
        "step": series.step,
        "start": series.start,
        "completed": series.completed,
        "failed": series.failed,
    }


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def functions_document(found: list[function_stats.FunctionStats]) -> dict[str, Any]:
    """Each function's last hour; latencies in seconds, to within ``relative_error``."""
    return {
        "window": function_stats.WINDOW_MINUTES * 60,
        "relative_error": round(latency.RELATIVE_ERROR, 4),
        "functions": [
            {
                "function": stats.function,
                "jobs": stats.jobs,
                "succeeded": stats.succeeded,
                "failed": stats.failed,
                "retried": stats.retried,
                "failure_rate": stats.failure_rate,
                "duration_p50": _seconds(stats.duration_p50),
                "duration_p95": _seconds(stats.duration_p95),
                "wait_p95": _seconds(stats.wait_p95),
            }
            for stats in found
        ],
    }


async def throughput_document(redis: Redis, span: Span) -> dict[str, Any]:
    return series_document(await throughput.series(redis, span, time.time()))


async def functions(redis: Redis, names: Iterable[str]) -> dict[str, Any]:
    """The last hour of each function in ``names`` (the registry's jobs) that ran in it."""
    return functions_document(await function_stats.last_hour(redis, names))


@dataclass(frozen=True, slots=True)
class Graphs:
    """What the overview draws: each span's document, and the functions' table."""

    spans: dict[Span, dict[str, Any]]
    functions: list[dict[str, Any]]


async def graphs(redis: Redis, names: Iterable[str]) -> Graphs:
    """Everything at once, for the overview: its reads share round trips (auto-pipelining)."""
    now = time.time()
    spans = asyncio.gather(*(throughput.series(redis, span, now) for span in SPANS))
    found = function_stats.last_hour(redis, names, now)
    all_series, by_function = await asyncio.gather(spans, found)
    documents = {series.span: series_document(series) for series in all_series}
    return Graphs(documents, functions_document(by_function)["functions"])
