"""The I/O drain of issue 17: jobs that only wait, queued first, then one worker drains them.

``io_jobs`` jobs that sleep ``io_sleep`` s each are queued with each system's own client
(this service: the bench-only ``bench_sleep`` job, bench/sleep_job.py; taskiq: an
``asyncio.sleep`` job; Dramatiq: a ``time.sleep`` job), then one worker process starts,
running ``io_concurrency`` of them at once (this service's WORKER_MAX_JOBS, taskiq's
``--max-async-tasks``, Dramatiq's threads). The floor is io_jobs x io_sleep / io_concurrency.
"""

from __future__ import annotations

from redis.asyncio import Redis

from bench.scenarios import Sampler, Sizes, drain
from bench.systems import System


async def io_drain(system: System, redis: Redis, sizes: Sizes, tag: str) -> dict[str, float]:
    """Seconds from the first job's start to the last one's end, and that against the floor.

    Counted from the first finished job (the worker's start-up left out) plus that first job's
    own sleep: the span of a drain that had its first job start at once.
    """
    await system.enqueue_sleeps(sizes.io_jobs, sizes.io_sleep)
    argv, env = system.io_worker(sizes.io_concurrency)
    worker = system.start_worker(tag, argv, env)
    try:
        sampler = Sampler(worker)
        drained = await drain(system, redis, sizes.io_jobs, 120, worker)
        peak = await sampler.stop()
    finally:
        worker.stop()
    seconds = drained.seconds + sizes.io_sleep
    floor = sizes.io_jobs * sizes.io_sleep / sizes.io_concurrency
    return {
        "seconds": seconds,
        "floor_s": floor,
        "x_floor": seconds / floor,
        "worker_cpu_ms_per_job": drained.worker_cpu / drained.jobs * 1000
        if drained.jobs
        else float("nan"),
        "worker_rss_load_io": peak,
    }
