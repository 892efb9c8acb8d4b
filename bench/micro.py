"""A quick before/after check for one lever: how fast one in-process worker drains no-op jobs.

``python -m bench.micro [--jobs N] [--loop uvloop] [--profile] [--raw] [--pause S]`` starts a
private redis-server, queues N ``log_event`` jobs with the service's own enqueue, runs the
service's worker (its production options) in this process until the queue is empty, and prints
jobs/s and CPU time per job, this process's and Redis's (steadier than jobs/s on a busy machine;
cProfile's top entries with ``--profile``). ``--raw`` runs the same engine with a bare no-op
function in place of the product's wrapped job (no tracking, logs or metrics): the floor the
product's bookkeeping is measured against. ``--pause`` waits that long between queueing and
draining, for a sampling profiler to attach (``py-spy record --pid``; bench/where.py reads its
output). The collector is tuned before the drain as the worker's CLI tunes it
(service.gc_tuning), unless ``--default-gc``. Not a benchmark to quote: ``make bench`` is.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from arq import func
from redis.asyncio import Redis

from bench.procs import Process, cpu_seconds
from bench.run import free_port, start_redis, wait_redis
from service.engine.loop import BatchWorker as Worker
from service.gc_tuning import tune_gc
from service.observability.logs import configure_logging
from service.queue.enqueue import enqueue
from service.store.redis import open_pool
from service.worker.options import worker_options
from settings import Settings


async def bare_noop(ctx: dict[str, Any], **kwargs: Any) -> None:
    """The raw engine's job: arq's contract and nothing else."""


async def drain(
    jobs: int,
    data_dir: Path,
    port: int,
    *,
    redis_pid: int,
    raw: bool = False,
    pause: float = 0,
    default_gc: bool = False,
) -> tuple[float, float, float]:
    settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", data_dir=data_dir)
    pool = await open_pool(settings)
    await pool.flushall()
    for n in range(jobs):
        await enqueue(pool, "log_event", {"event": {"n": n}})
    options = {**worker_options(settings), "handle_signals": False}
    if raw:
        options["functions"] = [func(bare_noop, name="log_event", keep_result=0)]
        options["after_job_end"] = None
    if pause:
        print(f"queued; draining in {pause:g} s (pid {os.getpid()})", flush=True)
        await asyncio.sleep(pause)
    if not default_gc:
        tune_gc()  # as BatchWorker.run does for ``arq service.WorkerSettings``
    worker = Worker(**options)
    task = asyncio.create_task(worker.async_run())
    started, cpu = time.perf_counter(), time.process_time()
    redis_cpu = cpu_seconds(redis_pid)
    while await pool.zcard(settings.queue_name):
        await asyncio.sleep(0.005)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    redis_cpu = cpu_seconds(redis_pid) - redis_cpu
    task.cancel()
    await worker.close()
    await pool.aclose()
    return jobs / elapsed, cpu / jobs * 1e6, redis_cpu / jobs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--raw", action="store_true", help="a bare no-op job: the engine alone")
    parser.add_argument("--pause", type=float, default=0, help="seconds before draining")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument(
        "--default-gc", action="store_true", help="CPython's collector settings, untuned"
    )
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    configure_logging(Settings())  # the service's JSON lines, written to nowhere
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    for handler in logging.getLogger().handlers:
        cast(logging.StreamHandler[Any], handler).setStream(devnull)
    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        redis: Process = start_redis(port)
        try:
            asyncio.run(wait_redis(Redis(port=port)))
            profile = cProfile.Profile() if args.profile else None
            if profile:
                profile.enable()
            rate, cpu_us, redis_us = asyncio.run(
                drain(
                    args.jobs,
                    Path(scratch),
                    port,
                    redis_pid=redis.pid,
                    raw=args.raw,
                    pause=args.pause,
                    default_gc=args.default_gc,
                )
            )
            if profile:
                profile.disable()
                pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        finally:
            redis.stop()
    print(
        f"{rate:,.0f} jobs/s, {cpu_us:,.0f} us of CPU per job (this process), "
        f"{redis_us:,.0f} us of Redis's"
    )


if __name__ == "__main__":
    main()
