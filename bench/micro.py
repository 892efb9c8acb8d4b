"""A quick before/after check for one lever: how fast one in-process worker drains no-op jobs.

``python -m bench.micro [--jobs N] [--profile]`` starts a private redis-server, queues N
``log_event`` jobs with the service's own enqueue, runs the service's worker (its production
options) in this process until the queue is empty, and prints jobs/s (cProfile's top entries
with ``--profile``). Not a benchmark to quote: ``make bench`` is.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import pstats
import tempfile
import time
from pathlib import Path

from arq.worker import Worker
from redis.asyncio import Redis

from bench.procs import Process
from bench.run import free_port, start_redis, wait_redis
from service.queue import JobName, enqueue
from service.redis import open_pool
from service.worker import worker_options
from settings import Settings


async def drain(jobs: int, data_dir: Path, port: int) -> float:
    settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", data_dir=data_dir)
    pool = await open_pool(settings)
    await pool.flushall()
    for n in range(jobs):
        await enqueue(pool, JobName.LOG_EVENT, event={"n": n})
    worker = Worker(**{**worker_options(settings), "handle_signals": False})
    task = asyncio.create_task(worker.async_run())
    started = time.perf_counter()
    while await pool.zcard(settings.queue_name):
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    task.cancel()
    await worker.close()
    await pool.aclose()
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, filename="/dev/null")
    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        redis: Process = start_redis(port)
        try:
            asyncio.run(wait_redis(Redis(port=port)))
            profile = cProfile.Profile() if args.profile else None
            if profile:
                profile.enable()
            rate = asyncio.run(drain(args.jobs, Path(scratch), port))
            if profile:
                profile.disable()
                pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        finally:
            redis.stop()
    print(f"{rate:,.0f} jobs/s")


if __name__ == "__main__":
    main()
