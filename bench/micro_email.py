"""A quick before/after check for the email path: one in-process worker drains send_email jobs.

``python -m bench.micro_email [--emails N] [--delay S] [--profile]`` starts a private
redis-server and the bench's SMTP sink (bench/sink.py, its own process, answering DATA after
``--delay`` seconds), queues N ``send_email`` jobs with the service's own enqueue, runs the
service's worker (its production options) in this process until the sink has them all, and
prints emails/s, the floor's multiple and CPU time per email in this process and in the sink
(cProfile's top entries with ``--profile``). Not a benchmark to quote: ``make bench`` is.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import aiohttp
from redis.asyncio import Redis

from bench.procs import Process, cpu_seconds
from bench.run import free_port, start_redis, wait_redis
from bench.systems import WORK
from service.engine.loop import BatchWorker as Worker
from service.observability.logs import configure_logging
from service.queue.enqueue import enqueue
from service.store.redis import open_pool
from service.worker.options import worker_options
from settings import Settings


async def accepted(http: aiohttp.ClientSession, count_port: int) -> int:
    async with http.get(f"http://127.0.0.1:{count_port}/") as response:
        n: int = (await response.json())["accepted"]
        return n


async def drain(
    emails: int, data_dir: Path, port: int, smtp_port: int, count_port: int, sink_pid: int
) -> tuple[float, float, float, int]:
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{port}/0",
        data_dir=data_dir,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
    )
    pool = await open_pool(settings)
    await pool.flushall()
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            try:
                before = await accepted(http, count_port)
                break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        for n in range(emails):
            await enqueue(
                pool, "send_email", {"to": f"u{n}@example.com", "subject": "Hello", "body": "Hi!\n"}
            )
        worker = Worker(**{**worker_options(settings), "handle_signals": False})
        task = asyncio.create_task(worker.async_run())
        started, cpu = time.perf_counter(), time.process_time()
        sink_cpu = cpu_seconds(sink_pid)
        while await accepted(http, count_port) - before < emails:
            await asyncio.sleep(0.01)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        sink_cpu = cpu_seconds(sink_pid) - sink_cpu
    task.cancel()
    await worker.close()
    await pool.aclose()
    return elapsed, cpu / emails * 1e6, sink_cpu / emails * 1e6, settings.worker_max_jobs


WORK_PROFILE = WORK / "micro_email.prof"  # for pstats: sort by cumtime, filter by module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--emails", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    configure_logging(Settings())  # the service's JSON lines, written to nowhere
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    for handler in logging.getLogger().handlers:
        cast(logging.StreamHandler[Any], handler).setStream(devnull)
    port, smtp_port, count_port = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as scratch:
        redis: Process = start_redis(port)
        sink = Process.start(
            "sink",
            [sys.executable, "-m", "bench.sink", str(smtp_port), str(count_port), str(args.delay)],
            env=dict(os.environ),
            cwd=Path(__file__).parent.parent,
            log=Path(scratch) / "sink.log",
        )
        try:
            asyncio.run(wait_redis(Redis(port=port)))
            profile = cProfile.Profile() if args.profile else None
            if profile:
                profile.enable()
            elapsed, cpu_us, sink_us, max_jobs = asyncio.run(
                drain(args.emails, Path(scratch), port, smtp_port, count_port, sink.pid)
            )
            if profile:
                profile.disable()
                profile.dump_stats(str(WORK_PROFILE))
                pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        finally:
            sink.stop()
            redis.stop()
    floor = args.emails * args.delay / max_jobs
    print(
        f"{args.emails / elapsed:,.0f} emails/s, {elapsed / floor:.2f}x floor, "
        f"{cpu_us:,.0f} us of CPU per email (this process), {sink_us:,.0f} us (the sink)"
    )


if __name__ == "__main__":
    main()
