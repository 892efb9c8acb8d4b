"""A job's code runs in its job task (service.engine.loop): how an abort, a time limit or a stop
cuts it, what a job that catches the cut ends with (as under arq's wait_for), and that the task,
cut, still times out and calls Redis as any other while it writes the job's bookkeeping."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss
from arq.utils import timestamp_ms
from arq.worker import func

from service.engine.loop import BatchWorker as Worker
from service.worker.options import worker_options
from settings import Settings
from tests.conftest import queued

JOB_ID = "cut-me"


class _Run:
    """One job run by a worker of its own, with hooks that record what the task can still do
    once the job's code has ended."""

    def __init__(self, catches: bool) -> None:
        self.catches = catches
        self.started = asyncio.Event()
        self.ended: list[str] = []  # how the job's code ended
        self.after: list[str] = []  # what after_job_end, in the same task, could do

    async def job(self, ctx: dict[str, Any]) -> str:
        self.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.ended.append("cancelled")
            await asyncio.sleep(0.01)  # its own clean-up, awaited in the cut task
            if self.catches:
                return "caught"
            raise
        return "slept"

    async def after_job_end(self, ctx: dict[str, Any]) -> None:
        task = asyncio.current_task()
        assert task is not None
        # a cancel left pending would turn a TaskGroup's errors, or a timeout on a Python
        # without 3.11.7's fix, into a CancelledError
        self.after.append(f"cancelling {task.cancelling()}")
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)
        except TimeoutError:
            self.after.append("timed out")
        self.after.append(f"ping {await ctx['redis'].ping()}")


async def _run(settings: Settings, redis: ArqRedis, run: _Run, cut: str) -> Worker:
    await redis.enqueue_job("job", _job_id=JOB_ID)
    options = worker_options(settings)
    options.update(
        functions=[func(run.job, name="job", timeout=0.2 if cut == "time limit" else 60)],
        after_job_end=run.after_job_end,
        handle_signals=False,
        poll_delay=0.01,
        burst=cut != "stop",
    )
    options["redis_pool"].wait_for_work = False
    worker = Worker(**options)
    main = asyncio.create_task(worker.main())
    await asyncio.wait_for(run.started.wait(), 10)
    if cut == "abort":
        await redis.zadd(abort_jobs_ss, {JOB_ID: timestamp_ms()})  # as DELETE /jobs/{id}
    elif cut == "stop":
        worker.handle_sig(signal.SIGTERM)
        main.cancel()  # arq's async_run would: the job loop ends, close() waits for the job
    await asyncio.wait_for(asyncio.gather(main, return_exceptions=True), 10)
    await asyncio.wait_for(worker.close(), 10)
    return worker


@pytest.mark.parametrize(
    ("cut", "catches", "counts"),
    [
        ("abort", False, (0, 1, 0)),  # "aborted"
        ("time limit", False, (0, 1, 0)),  # failed: TimeoutError
        ("stop", False, (0, 0, 1)),  # "cancelled, will be run again"
        # a job that catches the cut and returns: as arq's wait_for of a task of its own
        # made it, its result stands after an abort or its time limit, not after a stop
        ("abort", True, (1, 0, 0)),
        ("time limit", True, (1, 0, 0)),
        ("stop", True, (0, 0, 1)),
    ],
)
async def test_a_cut_job_ends_as_under_arq_and_its_task_still_times_out_and_calls_redis(
    settings: Settings,
    redis: ArqRedis,
    caplog: pytest.LogCaptureFixture,
    cut: str,
    catches: bool,
    counts: tuple[int, int, int],
) -> None:
    caplog.set_level(logging.INFO, "arq.worker")
    run = _Run(catches)
    worker = await _run(settings, redis, run, cut)

    assert run.ended == ["cancelled"]
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == counts
    assert run.after == ["cancelling 0", "timed out", "ping True"]  # the task is not cut
    assert worker.job_tasks == {}
    assert not worker._timed_out
    if counts == (0, 1, 0):
        said = "aborted" if cut == "abort" else "failed, TimeoutError"
        assert any(said in record.getMessage() for record in caplog.records)
    if cut == "stop":
        assert await queued(redis, settings) == [JOB_ID]  # waits for its next run
