"""What priorities cost and buy (README "Priorities and queues").

``python -m bench.priority`` starts a private redis-server and measures:

- **claim cost**: a deep queue of normal jobs on the default queue (arq's own key), then
  PROBES claims of CLAIM_BATCH jobs each, timed one at a time: the round trip, Redis's CPU
  (from /proc, the removals included) and Redis's own timing of the script (``INFO
  commandstats``: the steadiest figure on a shared machine), per claimed job; for arq's key
  alone (the claim as it was before priorities: run this file with the older tree first on
  PYTHONPATH to get its figure; the script calls whichever ``claim`` it finds), and for the
  keys a worker serving the default queue, or every queue, claims from (each queue's three
  priorities, all but one empty here); ``--against <older checkout>`` instead runs the older
  claim and this one by turns on one Redis and compares them round by round, which a busy
  machine's noise affects far less;
- **a high job's wait**: LOW_BACKLOG low-priority no-op jobs queued, one in-process worker
  (the service's options) draining them; once it has run WARM_UP, one high-priority job is
  queued, and the time from its enqueue to its start (its ``started_at``) is its wait. The
  same with a normal job on a backlog of normal ones is the wait without priorities.

Not a benchmark to quote as throughput: ``make bench`` is.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, cast

from redis.asyncio import Redis

from bench.procs import Process, cpu_seconds
from bench.run import free_port, start_redis, wait_redis
from service.engine import claim as claim_module
from service.engine.arq_api import job_key_prefix, serialize_job, timestamp_ms
from service.observability.logs import configure_logging
from service.store import keys
from service.store.redis import open_pool
from service.store.serialization import serialize
from settings import Settings

DEPTH = 20_000
PROBES = 200
CLAIM_BATCH = 50
LOW_BACKLOG = 5_000
WARM_UP = 200
ROUNDS = 3
ALL_QUEUES = ("default", "images")  # the queues jobs/registry.py declares
QUEUE = "arq:queue"
CLAIM_FILE = Path("service/engine/claim.py")


async def _fill(pool: Any, key: str, count: int, function: str = "log_event") -> list[str]:
    """``count`` jobs stored as the enqueue script stores them, due now, oldest first."""
    ids = [uuid.uuid4().hex for _ in range(count)]
    now = timestamp_ms()
    for first in range(0, count, 2_000):
        async with pool.pipeline(transaction=False) as pipe:
            for n, job_id in enumerate(ids[first : first + 2_000], start=first):
                payload = serialize_job(
                    function, (), {"event": {"n": n}}, None, now, serializer=serialize
                )
                pipe.psetex(job_key_prefix + job_id, 3_600_000, payload)
                pipe.zadd(key, {job_id: now - count + n})
            await pipe.execute()
    return ids


def _claim_call(pool: Any, settings: Settings, served: tuple[str, ...]) -> Any:
    """One claim of CLAIM_BATCH jobs with whichever ``claim`` this tree has, from arq's key
    alone (``served`` empty) or from every priority of the ``served`` queues, as a worker
    serving them claims."""
    claim: Any = claim_module.claim  # the older tree's takes other arguments
    common = {"count": CLAIM_BATCH, "lock_ms": 10_000, "scan": 1_050}
    if "pause_flag" not in inspect.signature(claim).parameters:  # before priorities
        if served:
            return None
        return lambda: claim(pool, settings.queue_name, now_ms=timestamp_ms(), **common)
    from service.engine.queues import ageing_offsets

    queues = ageing_offsets(served, settings.queue_name, 30_000) if served else []
    queues = queues or [(settings.queue_name, 0)]
    flag = keys.paused(settings.queue_name)
    return lambda: claim(pool, queues, pause_flag=flag, now_ms=timestamp_ms(), **common)


async def claim_cost(port: int, redis_pid: int, served: tuple[str, ...]) -> dict[str, float] | None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0")
    pool = await open_pool(settings)
    try:
        await pool.flushall()
        call = _claim_call(pool, settings, served)
        if call is None:
            return None
        await _fill(pool, settings.queue_name, DEPTH)
        times: list[float] = []
        await pool.config_resetstat()
        cpu = cpu_seconds(redis_pid)
        for _ in range(PROBES):
            started = time.perf_counter()
            jobs, _ = await call()
            times.append(time.perf_counter() - started)
            assert len(jobs) == CLAIM_BATCH
            await pool.zrem(settings.queue_name, *(job.job_id for job in jobs))
        cpu = cpu_seconds(redis_pid) - cpu
        stats = await pool.info("commandstats")
        script = stats.get("cmdstat_evalsha") or stats["cmdstat_eval"]
        return {
            "claim_us_per_job_median": statistics.median(times) / CLAIM_BATCH * 1e6,
            "redis_cpu_us_per_job": cpu / (PROBES * CLAIM_BATCH) * 1e6,
            # Redis's own timing of the claim script (the removals are ZREM, not counted)
            "script_us_per_job": float(script["usec_per_call"]) / CLAIM_BATCH,
        }
    finally:
        await pool.aclose(close_connection_pool=True)


def _older_claim(tree: Path) -> Any:
    """``service/engine/claim.py`` of an older checkout at ``tree``, loaded beside this one."""
    spec = importlib.util.spec_from_file_location("older_claim", tree / CLAIM_FILE)
    if spec is None or spec.loader is None:
        raise SystemExit(f"no {CLAIM_FILE} under {tree}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["older_claim"] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module.claim


async def _script_us_per_job(pool: Any, call: Any, claims: int) -> float:
    """Redis's own timing of the claim script (INFO commandstats), per job, over ``claims``."""
    await pool.config_resetstat()
    for _ in range(claims):
        jobs, _ = await call()
        assert len(jobs) == CLAIM_BATCH, "the queue must hold enough jobs for every claim"
        await pool.zrem(QUEUE, *(job.job_id for job in jobs))
    stats = await pool.info("commandstats")
    return float(stats["cmdstat_evalsha"]["usec_per_call"]) / CLAIM_BATCH


async def paired(port: int, older: Path, rounds: int = 30, claims: int = 25) -> None:
    """The older claim and this one taking turns on one Redis and one deep queue, so the
    machine's noise hits both alike: each one's script time per job, and this one's ratio to
    the older one's, round by round (median)."""
    from service.engine.queues import ageing_offsets

    old_claim, new_claim = _older_claim(older), claim_module.claim
    pool = await open_pool(Settings(redis_url=f"redis://127.0.0.1:{port}/0"))
    await pool.flushall()
    await _fill(pool, QUEUE, (3 * rounds * claims + 10) * CLAIM_BATCH)
    flag = keys.paused(QUEUE)
    common = {"count": CLAIM_BATCH, "lock_ms": 10_000, "scan": 1_050}

    def new(served: tuple[str, ...]) -> Any:
        queues = ageing_offsets(served, QUEUE, 30_000)
        return lambda: new_claim(pool, queues, pause_flag=flag, now_ms=timestamp_ms(), **common)

    variants: dict[str, Any] = {
        "older claim (arq's key)": lambda: old_claim(pool, QUEUE, now_ms=timestamp_ms(), **common),
        "this claim, a default-queue worker (3 keys)": new(("default",)),
        "this claim, an every-queue worker (6 keys)": new(ALL_QUEUES),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    try:
        order = list(variants.items())
        for turn in range(rounds):  # each takes each place in turn: no one always goes first
            for name, call in order[turn % 3 :] + order[: turn % 3]:
                times[name].append(await _script_us_per_job(pool, call, claims))
    finally:
        await pool.aclose(close_connection_pool=True)
    older_times = next(iter(times.values()))
    for name, values in times.items():
        ratio = statistics.median(a / b for a, b in zip(values, older_times, strict=True))
        print(
            f"{name}: script {statistics.median(values):.1f} us/job (median of {rounds}), "
            f"paired ratio to the older claim {ratio:.3f}"
        )


async def high_wait(port: int, data_dir: Path, priority: str) -> float:
    """Seconds from one ``priority`` job's enqueue to its start behind LOW_BACKLOG jobs
    (low ones for a high job, normal ones for a normal job)."""
    from service.engine.loop import BatchWorker as Worker
    from service.engine.queues import queue_key
    from service.queue.enqueue import enqueue
    from service.worker.options import worker_options

    settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", data_dir=data_dir)
    pool = await open_pool(settings)
    await pool.flushall()
    backlog = "low" if priority == "high" else "normal"
    key = queue_key(settings.queue_name, "default", backlog)  # type: ignore[arg-type]
    await _fill(pool, key, LOW_BACKLOG)
    worker = Worker(**{**worker_options(settings), "handle_signals": False})
    task = asyncio.create_task(worker.async_run())
    try:
        while await pool.zcard(key) > LOW_BACKLOG - WARM_UP:
            await asyncio.sleep(0.002)
        queued_at = timestamp_ms()
        job_id = await enqueue(pool, "log_event", {"event": "urgent"}, priority=priority)  # type: ignore[arg-type]
        while (started := await pool.hget(keys.job_meta(job_id), "started_at")) is None:  # type: ignore[misc]
            await asyncio.sleep(0.002)
        return (int(started) - queued_at) / 1000
    finally:
        task.cancel()
        await worker.close()
        await pool.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--claims-only", action="store_true")
    parser.add_argument("--against", type=Path, help="an older checkout: A/B its claim")
    args = parser.parse_args()
    configure_logging(Settings())
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    for handler in logging.getLogger().handlers:
        cast(logging.StreamHandler[Any], handler).setStream(devnull)
    port = free_port()
    redis: Process = start_redis(port)
    try:
        asyncio.run(wait_redis(Redis(port=port)))
        if args.against:
            asyncio.run(paired(port, args.against))
            return
        variants: dict[str, tuple[str, ...]] = {
            "arq's key only": (),
            "a default-queue worker's 3 keys": ("default",),
            "an every-queue worker's 6 keys": ALL_QUEUES,
        }
        for label, served in variants.items():
            figures = [
                asyncio.run(claim_cost(port, redis.popen.pid, served)) for _ in range(ROUNDS)
            ]
            if figures[0] is None:
                continue
            for name in figures[0]:
                values = sorted(round(f[name], 2) for f in figures if f is not None)
                print(f"claim, {label}: {name} = {statistics.median(values):.2f} {values}")
        if args.claims_only:
            return
        with tempfile.TemporaryDirectory() as scratch:
            for priority in ("high", "normal"):
                waits = [
                    asyncio.run(high_wait(port, Path(scratch), priority)) for _ in range(ROUNDS)
                ]
                print(
                    f"{priority} job behind {LOW_BACKLOG:,} queued: wait "
                    f"{statistics.median(waits) * 1000:.1f} ms (median of {waits})"
                )
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
