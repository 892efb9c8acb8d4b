"""The worker's job loop: arq's Worker, taking jobs in batches and finishing them in batches.

arq spends about ten Redis round trips on every job: five to take it (engine.claim), one to
finish it, and the job's own bookkeeping. Here a loop iteration takes as many due jobs as it
has free slots in one call (engine.claim), each job starts from the data that call returned,
and its finishing writes go through the client's auto-pipelining (store.autopipeline), so the
jobs finishing together share a round trip. Everything else (functions, retries, time limits,
results, aborts, cron, health, signals) is arq's, and the keys in Redis are arq's own.

Other differences from arq's loop:
- an idle worker waits on the wake list (engine.wakeup) inside the loop, and a full one waits
  for a free slot rather than polling, so a SIGTERM is seen before any further job is taken;
- a slot (``max_jobs``) is held while the job's own code runs: ``ctx["free_slot"]`` lets the
  tracking wrapper hand it on as soon as that code ends, so the next job's claim and start
  share round trips with this one's bookkeeping instead of waiting for it (at most
  ``max_jobs`` more jobs may be finishing their writes);
- a stop (SIGTERM, SIGINT) cuts only the jobs whose own code still runs, once the grace
  (``job_completion_wait``) has run out if there is one; a job writing its bookkeeping is
  left to write it, so its code, done, is not run again;
- a stop while Redis does not answer (store.outage) cuts every job at once, without the
  grace, and writes nothing; a worker whose Redis stayed away for REDIS_RETRY_SECONDS exits
  with status 1 after one line, not a traceback;
- a job that raises engine.postpone's Postponed goes back to the queue without a retry's
  line or count (it never started);
- the health line's ``queued`` leaves out the running jobs, and waiting, deferred and running
  follow it (engine.queue_counts);
- aborts are looked for at most every ABORT_CHECK_INTERVAL, not on every iteration;
- a job's code runs in its job task itself, not in a second task under ``asyncio.wait_for``
  (a task, a waiter, a timer and callbacks less per job): its time limit is one timer that
  cancels the job task, an abort cancels the job task (``job_tasks`` holds it), and what a
  job whose code catches the cut ends with is what arq's ``wait_for`` made of it; the
  cancels are taken back once its code has ended, so the bookkeeping after it is not cut. A
  context variable the job's code sets and leaves set is now seen by ``on_job_end`` and
  ``after_job_end`` (arq's second task had a copy of the context);
- a stored result keeps no copy of the job's arguments (arq's ``a`` and ``k`` are written
  empty): a result lives for a day, and a client's payload must not be kept that long a
  second time (the status API reads none of it; service.records keeps a bounded copy);
- no log line per job start and success: service.worker.observe writes one, with more in it;
- a job wrapper may leave its own last write in ``ctx["finish_with"]``: it goes in the same
  script call as the run's end (engine.finish), one call fewer per job;
- on a full worker, ``ctx["free_slot"]()`` returns an event that the job waits for before
  writing its bookkeeping: set once the loop has started the jobs taking the freed slots.
  Jobs that end together (a wave of 100 ms jobs at concurrency 100) would otherwise spend the
  event loop's next ~10 ms on their bookkeeping before the claim's reply is read, and every
  next job would start that much later (issue 17's I/O drain: 1.10-1.14x its floor, 1.05x
  with the wait). The bookkeeping is written one claim's round trip later.

arq's CLI builds ``arq.worker.Worker`` by name, so :func:`install` points that name here for
``arq service.WorkerSettings``. Every arq name this module relies on beyond arq's documented API
comes from service.engine.arq_api, which checks them all at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from datetime import datetime
from signal import Signals
from typing import Any

from arq import Retry
from redis.exceptions import RedisError

from service.engine.arq_api import (
    Function,
    JobExecutionFailed,
    RetryJob,
    SerializationError,
    Worker,
    abort_jobs_ss,
    cron_progress_seconds,
    deserialize_job_raw,
    in_progress_key_prefix,
    job_key_prefix,
    ms_to_datetime,
    no_result,
    result_key_prefix,
    retry_key_prefix,
    serialize_result,
    timestamp_ms,
    to_ms,
    use_worker_class,
)
from service.engine.claim import ClaimedJob, claim
from service.engine.finish import finish_run
from service.engine.postpone import Postponed
from service.engine.queue_counts import queue_counts
from service.engine.queues import DEFAULT_QUEUE, ageing_offsets, queue_keys, wake_key
from service.engine.wakeup import WakingRedis
from service.gc_tuning import tune_gc
from service.observability.metrics import JobMetrics
from service.store import keys
from service.store.outage import RedisOutage
from service.store.scripts import ScriptCall

logger = logging.getLogger("arq.worker")  # the lines arq itself would write

ABORT_CHECK_INTERVAL = 0.1  # seconds; how soon DELETE /jobs/{id} reaches a running job
SLOT_WAIT = 0.1  # seconds a full worker waits for a free slot before looking at aborts, cron
# What a stored result says the job's arguments were: nothing (module docstring).
NO_ARGS: tuple[Any, ...] = ()
NO_KWARGS: dict[str, Any] = {}


class BatchWorker(Worker):
    """arq's Worker with the batched job loop described in the module docstring."""

    # no __init__: arq's CLI passes only the settings its own Worker's signature names
    _next_abort_check = 0.0
    _finishing_ids: set[str] | None = None
    _stopping: asyncio.Task[None] | None = None  # the wait for the grace, once signalled
    _slot_event: asyncio.Event | None = None
    _claim_keys: list[tuple[str, int]] | None = None
    _queue_of_job: dict[str, str] | None = None
    _stop_cut: set[asyncio.Task[Any]] | None = None
    _timed_out_tasks: set[asyncio.Task[Any]] | None = None
    _handoff: asyncio.Event | None = None  # see _handoff_for_freed_slot
    _waiting_for_slot = False  # the loop waits for a slot to free (_claim_and_start)

    async def main(self) -> None:
        self._slot_event = asyncio.Event()
        await super().main()

    @property
    def _slot_free(self) -> asyncio.Event:
        """Set when a slot frees. Made on first use too: arq's tests poll without main()."""
        if self._slot_event is None:
            self._slot_event = asyncio.Event()
        return self._slot_event

    @property
    def claim_keys(self) -> list[tuple[str, int]]:
        """The sorted sets this worker claims from, each with its ageing offset
        (service.engine.queues), the default queue's normal one (arq's) first."""
        if self._claim_keys is None:
            pool = self._waking_pool
            ageing_ms = 0 if pool is None else pool.ageing_ms
            self._claim_keys = ageing_offsets(self.served_queues, self.queue_name, ageing_ms)
        return self._claim_keys

    @property
    def served_queues(self) -> tuple[str, ...]:
        """The named queues this worker takes jobs from (WORKER_QUEUES): its client carries
        them (service.worker.options), as arq's CLI passes the worker only arq's settings."""
        pool = self._waking_pool
        return (DEFAULT_QUEUE,) if pool is None else pool.served_queues

    def _queue_of(self, job_id: str) -> str:
        """The sorted set ``job_id`` was claimed from: its finishing writes go there."""
        if self._queue_of_job is None:
            return self.queue_name
        return self._queue_of_job.get(job_id, self.queue_name)

    @property
    def _finishing(self) -> set[str]:
        """Jobs whose own code has ended and whose bookkeeping is being written."""
        if self._finishing_ids is None:
            self._finishing_ids = set()
        return self._finishing_ids

    @property
    def _outage(self) -> RedisOutage | None:
        pool = self._waking_pool
        return None if pool is None else pool.outage

    def _redis_down(self) -> bool:
        """Redis has not answered since its last failure (service.store.outage)."""
        outage = self._outage
        return outage is not None and outage.down

    def run(self) -> None:
        """arq's, except that a worker whose Redis stayed away for REDIS_RETRY_SECONDS exits
        with status 1 after the one line that says so (service.store.outage), not with a
        traceback, for its supervisor to restart it. The garbage collector is set for a
        long-running process first (service.gc_tuning): this is the CLI's path only."""
        outage = self._outage  # read now: close() drops the pool
        tune_gc()
        try:
            super().run()
        except RedisError:
            if outage is None or not outage.gave_up:
                raise
            raise SystemExit(1) from None

    def handle_sig(self, signum: Signals) -> None:
        """arq's, except that a job whose own code has ended is left to write its bookkeeping
        (milliseconds) instead of being cut and, its code done, run again."""
        sig = Signals(signum)
        if self._redis_down():
            self._stop_during_outage(sig)
            return
        to_cut = self._running_code()
        logger.info(
            "shutdown on %s ◆ %d jobs complete ◆ %d failed ◆ %d retries ◆ %d ongoing to cancel",
            sig.name,
            self.jobs_complete,
            self.jobs_failed,
            self.jobs_retried,
            len(to_cut),
        )
        self._stop(sig, to_cut)

    def handle_sig_wait_for_completion(self, signum: Signals) -> None:
        """SIGTERM/SIGINT when ``job_completion_wait`` (WORKER_SHUTDOWN_GRACE) is set, as in
        production: arq's, with handle_sig's rule once the grace runs out.

        arq's version cuts every task left when the grace ends, a job merely writing its
        bookkeeping included, which then runs again though its code is done. Here no job is
        taken from now on, the running ones get up to the grace to end, then only those whose
        own code still runs are cut; close() (run by arq's ``run``) waits for the rest.
        """
        sig = Signals(signum)
        if self._redis_down():
            self._stop_during_outage(sig)
            return
        logger.info("Setting allow_pick_jobs to `False`")
        self.allow_pick_jobs = False
        logger.info(
            "shutdown on %s ◆ %d jobs complete ◆ %d failed ◆ %d retries ◆ %d to be completed",
            sig.name,
            self.jobs_complete,
            self.jobs_failed,
            self.jobs_retried,
            sum(not task.done() for task in self.tasks.values()),
        )
        if self._stopping is None:  # a second signal does not start a second grace
            # kept: the loop holds only a weak reference to a task
            self._stopping = self.loop.create_task(self._stop_after_grace(sig))

    async def _stop_after_grace(self, sig: Signals) -> None:
        """Wait until every job task has ended or the grace has run out, then stop as
        handle_sig does. The wait is on the tasks themselves, not arq's 0.1 s poll, and
        takes in the jobs a claim already in flight at the signal still starts."""
        deadline = self.loop.time() + self._job_completion_wait
        while pending := [task for task in self.tasks.values() if not task.done()]:
            left = deadline - self.loop.time()
            if left <= 0:
                break
            await asyncio.wait(pending, timeout=left)
        to_cut = self._running_code()
        logger.info(
            "shutdown on %s, wait complete ◆ %d jobs complete ◆ %d failed ◆ %d retries ◆ "
            "%d ongoing to cancel",
            sig.name,
            self.jobs_complete,
            self.jobs_failed,
            self.jobs_retried,
            len(to_cut),
        )
        self._stop(sig, to_cut)

    def _stop_during_outage(self, sig: Signals) -> None:
        """A stop while Redis does not answer: no grace, since no job can record anything;
        every Redis call fails at its next error instead of retrying, the running jobs are cut
        and run again once their locks expire, as after a kill (README "Reliability")."""
        outage = self._outage
        assert outage is not None
        outage.stop()
        self.allow_pick_jobs = False
        to_cut = [task for task in self.tasks.values() if not task.done()]
        logger.warning(
            "shutdown on %s with Redis unreachable: %d running jobs cut now, without "
            "the grace; they run again once their locks expire",
            sig.name,
            len(to_cut),
        )
        self._stop(sig, to_cut)

    def _running_code(self) -> list[asyncio.Task[Any]]:
        """The job tasks a stop cuts: those whose own code still runs, not the finishing."""
        return [
            task
            for job_id, task in self.tasks.items()
            if not task.done() and job_id not in self._finishing
        ]

    def _stop(self, sig: Signals, to_cut: list[asyncio.Task[Any]]) -> None:
        """Cut ``to_cut`` (each is re-queued: arq retries a CancelledError) and end the job
        loop, as arq does; close() then waits for every job task, the finishing ones too."""
        self._cut_by_stop.update(to_cut)
        for task in to_cut:
            task.cancel()
        if self.main_task:
            self.main_task.cancel()
        if self.on_stop:
            self.on_stop(sig)

    @property
    def _cut_by_stop(self) -> set[asyncio.Task[Any]]:
        """The job tasks a stop has cut (_stop)."""
        if self._stop_cut is None:
            self._stop_cut = set()
        return self._stop_cut

    @property
    def _timed_out(self) -> set[asyncio.Task[Any]]:
        """The job tasks whose job's code its time limit has cut, until _run has seen it."""
        if self._timed_out_tasks is None:
            self._timed_out_tasks = set()
        return self._timed_out_tasks

    def _time_up(self, task: asyncio.Task[Any]) -> None:
        """The time limit of the job whose code ``task`` runs has run out: cut its code."""
        self._timed_out.add(task)
        task.cancel()

    def _cut_outcome(
        self, task: asyncio.Task[Any], cancels: int, error: BaseException | None
    ) -> BaseException | None:
        """How a job whose task was cancelled while its code ran ended, as arq's wait_for of
        a task of its own made it: a stop's cut re-queues it whatever its code then did
        (wait_for raised CancelledError); past the time limit, the CancelledError its code let
        through becomes TimeoutError (the job fails: arq's time limit); after an abort, what
        its code did stands, a CancelledError included ("aborted"). Every cancel asked while
        the code ran is taken back (``uncancel``), so the bookkeeping's own awaits and
        timeouts in this task work as in any other."""
        while task.cancelling() > cancels:
            task.uncancel()
        timed_out = task in self._timed_out
        self._timed_out.discard(task)
        if task in self._cut_by_stop:
            return error if isinstance(error, asyncio.CancelledError) else asyncio.CancelledError()
        if timed_out and isinstance(error, asyncio.CancelledError):
            timeout = TimeoutError()
            timeout.__cause__ = error
            return timeout
        return error

    async def close(self) -> None:
        """arq's, except that a job task that ended cancelled does not stop the rest of the
        shutdown (the Redis pool closed, on_shutdown run) with its CancelledError, and that
        nothing is written to a Redis that does not answer."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        if not self._redis_down():  # else it expires on its own, in health_check_interval
            await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.close(close_connection_pool=True)
        self._pool = None

    @property
    def _waking_pool(self) -> WakingRedis | None:
        pool = self.pool
        return pool if isinstance(pool, WakingRedis) else None

    async def _poll_iteration(self) -> None:
        if self.allow_pick_jobs:
            await self._take_jobs()
        if self.allow_abort_jobs and time.monotonic() >= self._next_abort_check:
            self._next_abort_check = time.monotonic() + ABORT_CHECK_INTERVAL
            await self._cancel_aborted_jobs()
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()  # an error in the loop's own code must not pass unseen
        await self.heart_beat()

    async def record_health(self) -> None:
        """arq's, with ``j_ongoing`` counting the jobs whose own code runs (the slots held),
        not also those still writing their bookkeeping: it never reads above ``max_jobs``;
        ``queued`` counts the queue's jobs no worker runs (arq's counted the running ones
        too), followed by ``waiting``, ``deferred`` and ``running`` (engine.queue_counts),
        which also go to the worker's metrics."""
        now_ts = time.time()
        if (now_ts - self._last_health_check) < self.health_check_interval:
            return
        self._last_health_check = now_ts
        counts = await queue_counts(self.pool, [key for key, _ in self.claim_keys], timestamp_ms())
        metrics = self.ctx.get("metrics")
        if isinstance(metrics, JobMetrics):
            metrics.count_queue(counts.waiting, counts.deferred, counts.running)
        info = (
            f"{datetime.now():%b-%d %H:%M:%S} j_complete={self.jobs_complete} "
            f"j_failed={self.jobs_failed} j_retried={self.jobs_retried} "
            f"j_ongoing={self.job_counter} queued={counts.queued} waiting={counts.waiting} "
            f"deferred={counts.deferred} running={counts.running} "
            f"queues={','.join(self.served_queues)}"
        )
        await self.pool.psetex(
            self.health_check_key, int((self.health_check_interval + 1) * 1000), info.encode()
        )
        if isinstance(metrics, JobMetrics):  # after the line: this worker counts itself
            await self._count_named_queues(metrics)
        log_suffix = info[info.index("j_complete=") :]
        if self._last_health_check_log and log_suffix != self._last_health_check_log:
            logger.info("recording health: %s", info)
        if log_suffix != self._last_health_check_log:
            self._last_health_check_log = log_suffix

    async def _count_named_queues(self, metrics: JobMetrics) -> None:
        """Each served queue's jobs and the live workers serving it, for the metrics (read
        with the health line: every health_check_interval, not per job)."""
        now = timestamp_ms()
        lines = await self.pool.mget(await self._health_keys()) if self.served_queues else []
        for queue in self.served_queues:
            counts = await queue_counts(self.pool, queue_keys(self.queue_name, queue), now)
            serving = sum(1 for line in lines if line is not None and _serves(line.decode(), queue))
            metrics.count_named_queue(
                queue, counts.waiting, counts.deferred, counts.running, serving
            )

    async def _health_keys(self) -> list[str]:
        """Every live worker's own health key (service.records.workers lists them)."""
        names = await self.pool.zrange(keys.workers(), 0, -1)
        prefix = f"{self.queue_name}:health-check:"
        return [prefix + raw.decode() for raw in names] or [prefix]

    def _free_slots(self) -> int:
        running = self.job_counter
        free = min(self.max_jobs - running, 2 * self.max_jobs - running - len(self._finishing))
        if self.burst and self.max_burst_jobs >= 0:
            free = min(free, self.max_burst_jobs - self._jobs_started())
        return free

    async def _take_jobs(self) -> None:
        try:
            await self._claim_and_start()
        finally:
            self._hand_over()  # a stop or an error must not leave finishing jobs waiting

    def _handoff_for_freed_slot(self) -> asyncio.Event | None:
        """What a job that has just freed its slot waits for before writing its bookkeeping:
        the loop starting the jobs that take the freed slots. None when the loop was not
        waiting for a slot (it is claiming already, or waiting for work, which a freed slot
        does not end): the job then has no reason to wait."""
        if self._handoff is None and self._waiting_for_slot:
            self._handoff = asyncio.Event()
        return self._handoff

    def _hand_over(self) -> None:
        """The jobs claimed for the freed slots have started (or none could be claimed):
        the jobs that freed them may write their bookkeeping now."""
        handoff = self._handoff
        if handoff is not None:
            self._handoff = None
            handoff.set()

    async def _claim_and_start(self) -> None:
        free = self._free_slots()
        if free <= 0:
            self._slot_free.clear()
            self._waiting_for_slot = True
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_free.wait(), SLOT_WAIT)
            finally:
                self._waiting_for_slot = False
            free = self._free_slots()
            if free <= 0 or not self.allow_pick_jobs:
                return  # else claim now: the freed slot need not wait for the next iteration
        jobs, running_seen = await self._claim(free)
        pool = self._waking_pool
        if not jobs and pool is not None and pool.wait_for_work:
            self._hand_over()  # nothing to start: the wait below may be long
            await pool.wait_for_jobs(
                [key for key, _ in self.claim_keys],
                [wake_key(self.queue_name, queue) for queue in self.served_queues],
                busy=running_seen or bool(self.tasks),
            )
            if not self.allow_pick_jobs:
                return  # a SIGTERM came while waiting: take nothing more
            jobs, _ = await self._claim(free)
        for job in jobs:
            self._start(job)

    async def _claim(self, count: int) -> tuple[list[ClaimedJob], bool]:
        """Take up to ``count`` jobs, reading at most ``queue_read_limit`` queue entries, as
        arq reads that many job ids per poll: room to look past the jobs other workers are
        running, which stay at the head of the queue (service.worker.options sizes it)."""
        pool = self._waking_pool
        lock_ms = pool.start_lock_ms if pool is not None else 0
        return await claim(
            self.pool,
            self.claim_keys,
            pause_flag=keys.paused(self.queue_name),
            now_ms=timestamp_ms(),
            count=count,
            lock_ms=lock_ms or int(self.in_progress_timeout_s * 1000),
            scan=self.queue_read_limit,
        )

    def _start(self, job: ClaimedJob) -> None:
        self.job_counter += 1
        if job.queue_key != self.queue_name:
            if self._queue_of_job is None:
                self._queue_of_job = {}
            self._queue_of_job[job.job_id] = job.queue_key
        slot = _Slot(self, job.job_id)
        task = self.loop.create_task(self._run(job, slot.free))
        task.add_done_callback(slot.end)
        self.tasks[job.job_id] = task

    async def _run(  # noqa: C901
        self, job: ClaimedJob, free_slot: Callable[[], asyncio.Event | None]
    ) -> None:
        """arq 0.28's ``run_job``, starting from what the claim returned, running the job's
        code in this task (module docstring); ``free_slot`` goes to the job in ctx and is
        called once the job's function has returned."""
        job_id, score, job_try = job.job_id, job.score, job.job_try
        start_ms = timestamp_ms()
        function_name, enqueue_time_ms = "<unknown>", 0
        args: tuple[Any, ...] = ()
        kwargs: dict[Any, Any] = {}

        async def job_failed(exc: BaseException) -> None:
            self.jobs_failed += 1
            result_data_ = serialize_result(
                function=function_name,
                args=NO_ARGS,
                kwargs=NO_KWARGS,
                job_try=job_try,
                enqueue_time_ms=enqueue_time_ms,
                success=False,
                result=exc,
                start_ms=start_ms,
                finished_ms=timestamp_ms(),
                ref=f"{job_id}:{function_name}",
                serializer=self.job_serializer,
                queue_name=self.queue_name,
                job_id=job_id,
            )
            await asyncio.shield(self.finish_failed_job(job_id, result_data_))

        if job.data is None:
            logger.warning("job %s expired", job_id)
            return await job_failed(JobExecutionFailed("job expired"))
        try:
            function_name, args, kwargs, enqueue_job_try, enqueue_time_ms = deserialize_job_raw(
                job.data, deserializer=self.job_deserializer
            )
        except SerializationError as e:
            logger.exception("deserializing job %s failed", job_id)
            return await job_failed(e)

        if job.abort_requested:
            t = (timestamp_ms() - enqueue_time_ms) / 1000
            logger.info("%6.2fs ⊘ %s:%s aborted before start", t, job_id, function_name)
            return await job_failed(asyncio.CancelledError())

        try:
            function = self.functions[function_name]
        except KeyError:
            logger.warning("job %s, function %r not found", job_id, function_name)
            return await job_failed(JobExecutionFailed(f"function {function_name!r} not found"))

        if isinstance(function, Function):
            ref = f"{job_id}:{function_name}"
            keep_in_progress: float | None = None
        else:  # a cron job
            ref = function_name
            keep_in_progress = cron_progress_seconds()

        if enqueue_job_try and enqueue_job_try > job_try:
            job_try = enqueue_job_try
            await self.pool.setex(retry_key_prefix + job_id, 88400, str(job_try))

        max_tries = self.max_tries if function.max_tries is None else function.max_tries
        if job_try > max_tries:
            t = (timestamp_ms() - enqueue_time_ms) / 1000
            logger.warning("%6.2fs ! %s max retries %d exceeded", t, ref, max_tries)
            self.jobs_failed += 1
            result_data = serialize_result(
                function_name,
                NO_ARGS,
                NO_KWARGS,
                job_try,
                enqueue_time_ms,
                False,
                JobExecutionFailed(f"max {max_tries} retries exceeded"),
                start_ms,
                timestamp_ms(),
                ref,
                self.queue_name,
                job_id=job_id,
                serializer=self.job_serializer,
            )
            return await asyncio.shield(self.finish_failed_job(job_id, result_data))

        result: Any = no_result
        exc_extra: Any = None
        finish = False
        timeout_s = self.job_timeout_s if function.timeout_s is None else function.timeout_s
        incr_score: int | None = None
        ctx = {
            **self.ctx,
            "job_id": job_id,
            "job_try": job_try,
            "enqueue_time": ms_to_datetime(enqueue_time_ms),
            "score": score,
            "free_slot": free_slot,
            # a wrapper's last write may be put here to go with finish_job's (engine.finish)
            "finish_with": None,
        }
        if self.on_job_start:
            await self.on_job_start(ctx)

        start_ms = timestamp_ms()
        success = False
        try:
            # the job's code runs in this task, not in one of its own under wait_for (module
            # docstring): an abort cancels this task, and so does the time limit's timer
            task = asyncio.current_task()
            assert task is not None
            self.job_tasks[job_id] = task
            cancels = task.cancelling()  # those asked before the job's code starts: none
            limit = None
            if timeout_s is not None:
                limit = self.loop.call_later(timeout_s, self._time_up, task)
            error: BaseException | None = None
            try:
                result = await function.coroutine(ctx, *args, **kwargs)
            except (Exception, asyncio.CancelledError) as e:
                error = e
            finally:
                if limit is not None:
                    limit.cancel()
                del self.job_tasks[job_id]
                free_slot()
            if task.cancelling() > cancels:  # cut while its code ran: what wait_for made of it
                error = self._cut_outcome(task, cancels, error)
            if error is not None:
                # as arq: an exception's ``extra`` (or what it returns) goes on the failure's
                # log line; read here so that an ``extra()`` that raises fails the job instead
                exc_extra = _exception_extra(error)
                raise error
        except (Exception, asyncio.CancelledError) as e:
            finished_ms = timestamp_ms()
            t = (finished_ms - start_ms) / 1000
            if isinstance(e, Postponed):  # never started: back in the queue, quietly
                incr_score = (e.defer_score or 0) + (timestamp_ms() - score)
            elif self.retry_jobs and isinstance(e, Retry):
                incr_score = e.defer_score
                logger.info(
                    "%6.2fs ↻ %s retrying job in %0.2fs", t, ref, (e.defer_score or 0) / 1000
                )
                if e.defer_score:
                    incr_score = e.defer_score + (timestamp_ms() - score)
                self.jobs_retried += 1
            elif job_id in self.aborting_tasks and isinstance(e, asyncio.CancelledError):
                logger.info("%6.2fs ⊘ %s aborted", t, ref)
                result = e
                finish = True
                self.aborting_tasks.remove(job_id)
                self.jobs_failed += 1
            elif self.retry_jobs and isinstance(e, asyncio.CancelledError | RetryJob):
                logger.info("%6.2fs ↻ %s cancelled, will be run again", t, ref)
                self.jobs_retried += 1
            else:
                logger.exception(
                    "%6.2fs ! %s failed, %s: %s",
                    t,
                    ref,
                    e.__class__.__name__,
                    e,
                    extra=None if exc_extra is None else {"extra": exc_extra},
                )
                result = e
                finish = True
                self.jobs_failed += 1
        else:
            success = True
            finished_ms = timestamp_ms()
            finish = True
            self.jobs_complete += 1

        keep_result_forever = (
            self.keep_result_forever
            if function.keep_result_forever is None
            else function.keep_result_forever
        )
        result_timeout_s = (
            self.keep_result_s if function.keep_result_s is None else function.keep_result_s
        )
        result_data = None
        if result is not no_result and (keep_result_forever or result_timeout_s > 0):
            result_data = serialize_result(
                function_name,
                NO_ARGS,
                NO_KWARGS,
                job_try,
                enqueue_time_ms,
                success,
                result,
                start_ms,
                finished_ms,
                ref,
                self.queue_name,
                job_id=job_id,
                serializer=self.job_serializer,
            )

        if self.on_job_end:
            await self.on_job_end(ctx)

        await asyncio.shield(
            self.finish_job(
                job_id,
                finish,
                result_data,
                result_timeout_s,
                keep_result_forever,
                incr_score,
                keep_in_progress,
                then=ctx["finish_with"],
            )
        )

        if self.after_job_end:
            await self.after_job_end(ctx)
        return None

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
        then: ScriptCall | None = None,
    ) -> None:
        """arq's writes in one script call (service.engine.finish), batched with other jobs'
        calls by the auto-pipelined pool; ``then``, the job's own last write, in the same call."""
        expire = None if keep_result_forever else result_timeout_s
        await finish_run(
            self.pool,
            job_id,
            self._queue_of(job_id),
            finished=finish,
            result=result_data,
            result_ms=to_ms(expire),
            incr_score=incr_score,
            lock_ms=None if keep_in_progress is None else to_ms(keep_in_progress),
            then=then,
        )

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """arq's writes for a job that failed before it ran, batched like finish_job."""
        async with self.pool.pipeline(transaction=False) as pipe:
            pipe.delete(retry_key_prefix + job_id, job_key_prefix + job_id)
            pipe.zrem(abort_jobs_ss, job_id)
            pipe.zrem(self._queue_of(job_id), job_id)
            if result_data is not None and (self.keep_result_forever or self.keep_result_s > 0):
                expire = 0 if self.keep_result_forever else self.keep_result_s
                pipe.set(result_key_prefix + job_id, result_data, px=to_ms(expire))
            pipe.delete(in_progress_key_prefix + job_id)
            await pipe.execute()


def _serves(health_line: str, queue: str) -> bool:
    """Whether a worker's health line (record_health) names ``queue`` among its queues."""
    _, found, served = health_line.partition(" queues=")
    return queue in (served.split(" ", 1)[0].split(",") if found else ("default",))


def _exception_extra(exc: BaseException) -> Any:
    """What arq logs as a failed job's ``extra``: the exception's ``extra`` attribute, called
    if it is a method, so error trackers reading log records get the job's own context."""
    extra = getattr(exc, "extra", None)
    return extra() if callable(extra) else extra


class _Slot:
    """One job's place among ``max_jobs``, freed once: by the job when its own code ends
    (it is then finishing, until its task ends) or, at the latest, when its task ends."""

    __slots__ = ("_held", "_job_id", "_worker")

    def __init__(self, worker: BatchWorker, job_id: str) -> None:
        self._worker = worker
        self._job_id = job_id
        self._held = True

    def free(self) -> asyncio.Event | None:
        """Free the slot; what the job waits for before its bookkeeping, if anything
        (BatchWorker._handoff_for_freed_slot)."""
        if self._held:
            self._held = False
            worker = self._worker
            worker.job_counter -= 1
            worker._finishing.add(self._job_id)
            worker._slot_free.set()
            return worker._handoff_for_freed_slot()
        return None

    def end(self, _task: object = None) -> None:
        self.free()
        self._worker._finishing.discard(self._job_id)
        if self._worker._queue_of_job is not None:
            self._worker._queue_of_job.pop(self._job_id, None)
        self._worker._slot_free.set()  # one fewer finishing: that bound may allow more


def install() -> None:
    """Make arq's CLI (``arq service.WorkerSettings``) build this worker instead of its own."""
    use_worker_class(BatchWorker)
