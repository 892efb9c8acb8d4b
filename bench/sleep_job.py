"""The bench_sleep job: holds its slot for a given time without using the CPU.

The I/O drain (bench/io_drain.py) measures how close a worker comes to its floor with jobs
that only wait, as taskiq's ``asyncio.sleep`` and Dramatiq's ``time.sleep`` jobs do. It is
declared as README "Add your own job" says, but listed only in the bench's worker
(bench/worker.py), never in jobs/registry.py: production workers and the API do not know it.
"""

from __future__ import annotations

import asyncio

from pydantic import Field

from service.runtime import Job, JobContext, JobInput


class BenchSleep(JobInput):
    seconds: float = Field(ge=0, le=10)


async def bench_sleep(ctx: JobContext, *, seconds: float) -> None:
    """Sleep for ``seconds`` on the event loop (the bench's stand-in for an I/O-bound job)."""
    await asyncio.sleep(seconds)


JOB = Job(name="bench_sleep", run=bench_sleep, input=BenchSleep, time_limit=30, keep_result=False)
