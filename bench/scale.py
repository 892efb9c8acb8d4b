"""The scale scenario: what more workers buy, and what a deep queue costs (this service only).

- **Workers**: ``scale_jobs`` no-op jobs queued, then 1, 2 and 4 worker processes started
  together drain them: aggregate jobs/s, Redis's own CPU per 1,000 jobs (from /proc, so a
  shared machine disturbs it less than jobs/s), and the workers' CPU per job.
- **Backlog**: ``backlog`` jobs queued with the service's own enqueue (pipelined): Redis memory
  per queued job; one enqueue's and one claim's cost at that depth against an empty queue
  (round-trip time and Redis CPU); ``/health``'s and the dashboard overview's latency there.

Jobs are queued straight into Redis with the service's ``enqueue_job`` (the same Lua script
the API runs), not through HTTP: the front door has its own scenario, and a million requests
would measure it again.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import aiohttp
from arq.connections import ArqRedis
from redis.asyncio import Redis

from bench.procs import Process, cpu_seconds
from bench.systems import TOKEN, Ours
from service.engine.arq_api import timestamp_ms
from service.engine.claim import claim, single_queue
from service.queue.enqueue import enqueue_job
from service.store.redis import open_pool
from settings import Settings

QUEUE = "arq:queue"
WORKER_COUNTS = (1, 2, 4)
PROBES = 200  # enqueues and claims timed one at a time
SHALLOW = PROBES * 50 * 2  # the "near empty" queue the deep one is compared with
CHUNK = 2_000  # enqueues in flight at once while filling the queue


async def fill(redis_url: str, count: int) -> float:
    """Queue ``count`` no-op jobs with the service's enqueue; returns jobs/s."""
    pool = await open_pool(Settings(redis_url=redis_url))
    started = time.perf_counter()
    try:
        for first in range(0, count, CHUNK):
            batch = range(first, min(first + CHUNK, count))
            await asyncio.gather(
                *(
                    enqueue_job(pool, "log_event", uuid.uuid4().hex, {"event": {"n": n}})
                    for n in batch
                )
            )
    finally:
        await pool.aclose(close_connection_pool=True)
    return count / (time.perf_counter() - started)


async def _drained(redis: Redis, within: float, workers: list[Process]) -> float:
    """Seconds until the queue is empty, from the first job gone (start-up left out)."""
    total = int(await redis.zcard(QUEUE))
    first_at = 0.0
    deadline = time.monotonic() + within
    while (left := int(await redis.zcard(QUEUE))) > 0:
        if left < total and not first_at:
            first_at = time.perf_counter()
        if time.monotonic() > deadline or not all(w.alive() for w in workers):
            raise RuntimeError(f"scale: {left} jobs still queued (see bench/.work/logs)")
        await asyncio.sleep(0.02)
    return time.perf_counter() - (first_at or time.perf_counter())


async def workers(
    system: Ours, redis: Redis, redis_pid: int, jobs: int, tag: str
) -> dict[str, float]:
    """Aggregate jobs/s and CPU for 1, 2 and 4 workers draining ``jobs`` together."""
    figures: dict[str, float] = {}
    for count in WORKER_COUNTS:
        await redis.flushall()
        await fill(f"redis://127.0.0.1:{system.ports.redis}/0", jobs)
        redis_before = cpu_seconds(redis_pid)
        started = [system.start_worker(f"{tag}-{count}w-{n}") for n in range(count)]
        try:
            before = sum(cpu_seconds(worker.pid) for worker in started)
            seconds = await _drained(redis, 600, started)
            worker_cpu = sum(cpu_seconds(worker.pid) for worker in started) - before
            redis_cpu = cpu_seconds(redis_pid) - redis_before
        finally:
            for worker in started:
                worker.stop()
        figures[f"jobs_per_s_{count}w"] = jobs / seconds
        figures[f"redis_cpu_ms_per_1000_{count}w"] = redis_cpu / jobs * 1e6
        figures[f"worker_cpu_us_per_job_{count}w"] = worker_cpu / jobs * 1e6
    return figures


async def _each(probe: Any, times: int) -> list[float]:
    """Seconds per call of ``probe``, one call at a time."""
    taken = []
    for _ in range(times):
        started = time.perf_counter()
        await probe()
        taken.append(time.perf_counter() - started)
    return taken


async def _costs(pool: ArqRedis, redis_pid: int) -> dict[str, float]:
    """One enqueue's and one 50-job claim's round trip (median, us) and Redis CPU (mean, us),
    at the queue's present depth. Each claimed batch is then taken off the queue, as finished
    jobs are (its removal is in the claim's Redis CPU, not in its round trip)."""

    async def one_enqueue() -> None:
        await enqueue_job(pool, "log_event", uuid.uuid4().hex, {"event": {"n": 0}})

    claim_times: list[float] = []

    async def one_claim() -> None:
        started = time.perf_counter()
        jobs, _ = await claim(
            pool,
            **single_queue(QUEUE),
            now_ms=timestamp_ms(),
            count=50,
            lock_ms=10_000,
            scan=1_050,
        )
        claim_times.append(time.perf_counter() - started)
        assert len(jobs) == 50, "the queue must hold enough jobs for every claim"
        await pool.zrem(QUEUE, *(job.job_id for job in jobs))

    cpu = cpu_seconds(redis_pid)
    enqueues = await _each(one_enqueue, PROBES)
    enqueue_cpu = (cpu_seconds(redis_pid) - cpu) / PROBES * 1e6
    cpu = cpu_seconds(redis_pid)
    await _each(one_claim, PROBES)
    claim_cpu = (cpu_seconds(redis_pid) - cpu) / PROBES * 1e6
    return {
        "enqueue_us": statistics.median(enqueues) * 1e6,
        "enqueue_redis_cpu_us": enqueue_cpu,
        "claim_us": statistics.median(claim_times) * 1e6,
        "claim_redis_cpu_us": claim_cpu,
    }


async def _page_ms(http: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    async def load() -> None:
        async with http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 200, response.status
            await response.read()

    taken = sorted(await _each(load, 50))
    return statistics.median(taken) * 1e3, taken[int(len(taken) * 0.99) - 1] * 1e3


async def backlog(
    http: aiohttp.ClientSession,
    system: Ours,
    redis: Redis,
    redis_pid: int,
    depth: int,
    tag: str,
) -> dict[str, float]:
    """What ``depth`` queued jobs cost: memory, enqueue and claim, /health and the overview."""
    from bench.scenarios import web_ready  # the scenarios module imports this one's caller

    url = f"redis://127.0.0.1:{system.ports.redis}/0"
    pool = await open_pool(Settings(redis_url=url))
    try:
        await redis.flushall()
        await fill(url, SHALLOW)
        shallow = await _costs(pool, redis_pid)
        await redis.flushall()
        memory_before = int((await redis.info("memory"))["used_memory"])
        fill_rate = await fill(url, depth)
        memory = int((await redis.info("memory"))["used_memory"]) - memory_before
        deep = await _costs(pool, redis_pid)
    finally:
        await pool.aclose(close_connection_pool=True)
    web = system.start_web(tag)
    try:
        await web_ready(http, system, web)
        health_p50, health_p99 = await _page_ms(http, system.url + "/health")
        overview_p50, overview_p99 = await _page_ms(http, system.url + "/dashboard")
    finally:
        web.stop()
    return {
        "depth": depth,
        "fill_jobs_per_s": fill_rate,
        "bytes_per_queued_job": memory / depth,
        **{f"{name}_shallow": value for name, value in shallow.items()},
        **{f"{name}_deep": value for name, value in deep.items()},
        "health_ms_p50": health_p50,
        "health_ms_p99": health_p99,
        "overview_ms_p50": overview_p50,
        "overview_ms_p99": overview_p99,
    }


async def scale(
    http: aiohttp.ClientSession,
    system: Ours,
    redis: Redis,
    redis_pid: int,
    jobs: int,
    depth: int,
    tag: str,
) -> dict[str, float]:
    """Both parts, one after the other, on a flushed Redis."""
    figures = await workers(system, redis, redis_pid, jobs, tag)
    figures.update(await backlog(http, system, redis, redis_pid, depth, tag))
    await redis.flushall()
    return figures
