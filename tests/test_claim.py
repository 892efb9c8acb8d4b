"""Taking jobs in batches (engine.claim) and the job loop built on it (engine.loop)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.utils import timestamp_ms
from arq.worker import func

from service.engine.claim import claim, single_queue
from service.engine.loop import BatchWorker as Worker
from service.queue.enqueue import enqueue
from service.worker.options import worker_options
from settings import Settings
from tests.conftest import RunWorker, queued
from tests.waiting import wait_until

LOCK_MS = 5_000
HEALTH_KEY = "test:health-check"


async def _claim(redis: ArqRedis, settings: Settings, count: int, scan: int = 100) -> list[str]:
    jobs, _ = await claim(
        redis,
        **single_queue(settings.queue_name),
        now_ms=timestamp_ms(),
        count=count,
        lock_ms=LOCK_MS,
        scan=scan,
    )
    return [job.job_id for job in jobs]


async def test_a_claim_takes_due_jobs_oldest_first_and_locks_them(
    redis: ArqRedis, settings: Settings
) -> None:
    ids = [await enqueue(redis, "log_event", {"event": {"n": n}}) for n in range(3)]
    jobs, running_seen = await claim(
        redis,
        **single_queue(settings.queue_name),
        now_ms=timestamp_ms(),
        count=2,
        lock_ms=LOCK_MS,
        scan=100,
    )
    assert [job.job_id for job in jobs] == (await queued(redis, settings))[:2]
    assert not running_seen
    for job in jobs:
        assert job.job_id in ids
        assert job.job_try == 1
        assert job.data == await redis.get(job_key_prefix + job.job_id)
        assert not job.abort_requested
        assert 0 < await redis.pttl(in_progress_key_prefix + job.job_id) <= LOCK_MS
        assert await redis.get(retry_key_prefix + job.job_id) == b"1"
    # the jobs stay queued while they run, as arq keeps them
    assert len(await queued(redis, settings)) == 3


async def test_a_worker_claims_past_ten_full_workers_running_jobs(
    redis: ArqRedis, settings: Settings
) -> None:
    """Running jobs stay at the head of the queue; ten workers at WORKER_MAX_JOBS, each with as
    many finishing, hold 2 * 10 * 50 of them, and the next due job must still be found."""
    running = 2 * 10 * settings.worker_max_jobs
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(running):
            pipe.zadd(settings.queue_name, {f"running-{n}": n})
            pipe.set(in_progress_key_prefix + f"running-{n}", b"1")
        await pipe.execute()
    ready = await enqueue(redis, "log_event", {"event": {"n": 1}})
    scan = worker_options(settings)["queue_read_limit"]
    assert await _claim(redis, settings, count=1, scan=scan) == [ready]


async def test_a_claim_skips_running_and_deferred_jobs(redis: ArqRedis, settings: Settings) -> None:
    running = await enqueue(redis, "log_event", {"event": {"n": 1}})
    ready = await enqueue(redis, "log_event", {"event": {"n": 2}})
    await redis.set(in_progress_key_prefix + running, b"1")
    later = await redis.enqueue_job("log_event", event={"n": 3}, _defer_by=60)
    assert later is not None
    jobs, running_seen = await claim(
        redis,
        **single_queue(settings.queue_name),
        now_ms=timestamp_ms(),
        count=10,
        lock_ms=LOCK_MS,
        scan=100,
    )
    assert [job.job_id for job in jobs] == [ready]
    assert running_seen


async def test_a_claim_looks_no_further_than_its_scan(redis: ArqRedis, settings: Settings) -> None:
    for n in range(5):
        await enqueue(redis, "log_event", {"event": {"n": n}})
    ids = await queued(redis, settings)
    for job_id in ids[:3]:  # running on other workers
        await redis.set(in_progress_key_prefix + job_id, b"1")
    assert await _claim(redis, settings, count=5, scan=3) == []
    assert await _claim(redis, settings, count=5, scan=4) == [ids[3]]


async def test_racing_claims_never_take_the_same_job(redis: ArqRedis, settings: Settings) -> None:
    for n in range(40):
        await enqueue(redis, "log_event", {"event": {"n": n}})
    batches = await asyncio.gather(*(_claim(redis, settings, count=7) for _ in range(8)))
    taken = [job_id for batch in batches for job_id in batch]
    assert len(taken) == len(set(taken)) == 40


async def test_a_claim_reports_an_abort_asked_before_the_start_and_clears_it(
    redis: ArqRedis, settings: Settings
) -> None:
    job_id = await enqueue(redis, "log_event", {"event": {"n": 1}})
    await redis.zadd(abort_jobs_ss, {job_id: timestamp_ms()})
    [job], _ = await claim(
        redis,
        **single_queue(settings.queue_name),
        now_ms=timestamp_ms(),
        count=1,
        lock_ms=LOCK_MS,
        scan=10,
    )
    assert job.abort_requested
    assert await redis.zscore(abort_jobs_ss, job_id) is None


async def test_a_claimed_job_whose_data_expired_comes_without_data(
    redis: ArqRedis, settings: Settings
) -> None:
    job_id = await enqueue(redis, "log_event", {"event": {"n": 1}})
    await redis.delete(job_key_prefix + job_id)
    [job], _ = await claim(
        redis,
        **single_queue(settings.queue_name),
        now_ms=timestamp_ms(),
        count=1,
        lock_ms=LOCK_MS,
        scan=10,
    )
    assert job.data is None


async def test_the_loop_runs_more_jobs_than_it_has_slots_each_once(
    redis: ArqRedis, settings: Settings, run_worker: RunWorker
) -> None:
    for n in range(130):
        await enqueue(redis, "log_event", {"event": {"n": n}})
    worker = await run_worker(max_jobs=20)
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (130, 0, 0)
    assert await queued(redis, settings) == []
    assert await redis.keys(in_progress_key_prefix + "*") == []
    assert await redis.keys(job_key_prefix + "*") == []


async def test_a_job_that_frees_its_slot_lets_the_next_start_while_it_finishes(
    redis: ArqRedis, run_worker: RunWorker
) -> None:
    jobs = 4
    started = [asyncio.Event() for _ in range(jobs)]
    starts, running, peak, reported = 0, 0, 0, []

    async def frees_then_writes(ctx: dict[str, Any]) -> None:
        nonlocal starts, running, peak
        mine, starts = starts, starts + 1
        started[mine].set()
        running += 1
        peak = max(peak, running)
        ctx["free_slot"]()  # what service.worker.tracking does once the job's own code has ended
        # its bookkeeping, still being written: until the next job has started beside it ...
        if mine + 1 < jobs:
            await asyncio.wait_for(started[mine + 1].wait(), 10)
        # ... and the worker has written its health line since (on every loop iteration here)
        pool = ctx["redis"]
        await pool.delete(HEALTH_KEY)

        async def health_written() -> bool:
            return bool(await pool.exists(HEALTH_KEY))

        await wait_until(health_written)
        health = await pool.get(HEALTH_KEY)
        reported.append(int(health.decode().split("j_ongoing=")[1].split()[0]))
        running -= 1

    for _ in range(jobs):
        await redis.enqueue_job("frees_then_writes")
    worker = await run_worker(
        max_jobs=1,
        functions=[func(frees_then_writes, name="frees_then_writes")],
        health_check_key=HEALTH_KEY,
        health_check_interval=0,
    )

    assert worker.jobs_complete == jobs
    # one more job started while one was finishing, but no more than max_jobs more
    assert peak == 2
    # the health line counts the jobs whose code runs (none here: each freed its slot), not
    # those finishing their bookkeeping (arq's count: 2), so never more than max_jobs
    assert len(reported) == jobs
    assert max(reported) <= 1


async def test_a_full_worker_starts_the_next_jobs_before_the_freed_ones_write_their_bookkeeping(
    redis: ArqRedis, run_worker: RunWorker
) -> None:
    """Jobs ending together wait for the jobs taking their slots to start, then write their
    bookkeeping; the last ones, with nothing left to start, are not kept waiting."""
    order: list[str] = []

    async def frees(ctx: dict[str, Any], n: int) -> None:
        order.append(f"start {n}")
        await asyncio.sleep(0.05)  # both slots held: the loop waits for one to free
        handoff = ctx["free_slot"]()  # what service.worker.tracking does, then waits
        if handoff is not None:
            await asyncio.wait_for(handoff.wait(), 10)
        order.append(f"bookkeeping {n}")

    for n in range(4):
        await redis.enqueue_job("frees", n, _job_id=f"job-{n}", _defer_by=n / 1000)
    worker = await run_worker(max_jobs=2, functions=[func(frees, name="frees")])

    assert worker.jobs_complete == 4
    assert order.index("start 2") < order.index("bookkeeping 0")
    assert order.index("start 3") < order.index("bookkeeping 1")
    assert sorted(order) == sorted(
        [f"start {n}" for n in range(4)] + [f"bookkeeping {n}" for n in range(4)]
    )


async def test_a_stop_cuts_running_jobs_but_lets_finishing_ones_write_their_bookkeeping(
    redis: ArqRedis, settings: Settings
) -> None:
    finishing, running, stopping = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def finishes(ctx: dict[str, Any]) -> str:
        ctx["free_slot"]()  # its own code has ended
        finishing.set()
        await stopping.wait()  # its bookkeeping, still being written when the stop comes
        return "written"

    async def runs(ctx: dict[str, Any]) -> None:
        running.set()
        await asyncio.sleep(30)

    await redis.enqueue_job("finishes")
    await redis.enqueue_job("runs")
    options = worker_options(settings)
    options.update(
        functions=[func(finishes, name="finishes"), func(runs, name="runs")],
        handle_signals=False,
        poll_delay=0.01,
    )
    worker = Worker(**options)
    loop = asyncio.create_task(worker.main())
    await asyncio.wait_for(asyncio.gather(finishing.wait(), running.wait()), 10)

    worker.handle_sig(signal.SIGTERM)
    stopping.set()
    loop.cancel()
    await worker.close()  # does not raise the cut job's CancelledError

    assert (worker.jobs_complete, worker.jobs_retried) == (1, 1)
    assert await queued(redis, settings) != []  # the cut job waits for its next run
