"""The service's worker with an event-loop lag probe, for the images scenario.

``arq bench.lagprobe.WorkerSettings``: the same settings as ``service.WorkerSettings``, plus a
task that sleeps 10 ms at a time and records how late it wakes; the samples (time, lag ms)
go to the
file named by BENCH_LAG_FILE when the worker stops.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import service

PERIOD = 0.01

_base: dict[str, Any] = {
    key: value for key, value in vars(service.WorkerSettings).items() if not key.startswith("__")
}
_samples: list[tuple[float, float]] = []  # (wall-clock time, lag ms)


async def _probe() -> None:
    while True:
        before = time.perf_counter()
        await asyncio.sleep(PERIOD)
        _samples.append((time.time(), (time.perf_counter() - before - PERIOD) * 1000))


async def on_startup(ctx: dict[str, Any]) -> None:
    await _base["on_startup"](ctx)
    ctx["bench_lag_probe"] = asyncio.create_task(_probe())


async def on_shutdown(ctx: dict[str, Any]) -> None:
    ctx["bench_lag_probe"].cancel()
    Path(os.environ["BENCH_LAG_FILE"]).write_text(json.dumps(_samples))
    await _base["on_shutdown"](ctx)


WorkerSettings = type(
    "WorkerSettings", (), {**_base, "on_startup": on_startup, "on_shutdown": on_shutdown}
)
