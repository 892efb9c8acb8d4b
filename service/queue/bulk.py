"""Bulk Retry, Cancel and Delete on a search's result set.

A bulk action first counts what the search matches now (at most BULK_MAX_JOBS jobs, newest
first) and refuses when that is not the count the operator confirmed: the set changed since
they looked, so nothing is done. Then it acts on each job through the single-job code, whose
scripts decide atomically per job (service.queue.retry: the failed-jobs entry is taken by
one caller; service.queue.cancel: the job is taken off the queue once; failed_jobs.discard:
one ZREM wins). Two operators pressing at once therefore act on each job once between them:
the later one finds it already done and reports it as skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from redis.asyncio import Redis

from service.engine.queues import QueueLayout
from service.queue.cancel import JobFinishedError, JobNotFoundError, cancel_job
from service.queue.retry import retry_as_configured
from service.records import failed_jobs
from service.records.failed_jobs import ArgumentsCutError, NotFailedError
from service.records.search import SCAN_MAX, Found, SearchQuery, search
from settings import Settings

AT_ONCE = 10  # jobs acted on concurrently: their round trips overlap, Redis is not flooded


class BulkAction(StrEnum):
    RETRY = "retry"  # a failed job runs again (as POST /jobs/{id}/retry)
    CANCEL = "cancel"  # a queued or running job is cancelled (as DELETE /jobs/{id})
    DELETE = "delete"  # a failed job leaves the failed-jobs list (the dashboard's Delete)


class CountChangedError(Exception):
    """The search no longer matches the number of jobs the operator confirmed."""

    def __init__(self, expected: int, count: int) -> None:
        super().__init__(f"expected {expected} jobs, the search now matches {count}")
        self.expected = expected
        self.count = count


@dataclass(frozen=True, slots=True)
class Matches:
    """What a bulk action would touch: at most BULK_MAX_JOBS jobs; ``more`` when others match
    (or the search stopped looking before the end: see service.records.search)."""

    jobs: list[Found]
    more: bool


@dataclass(slots=True)
class BulkOutcome:
    action: BulkAction
    more: bool  # more jobs match than one call acts on (BULK_MAX_JOBS): press again
    done: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # job id -> why


async def matching(
    redis: Redis, settings: Settings, query: SearchQuery, layout: QueueLayout | None = None
) -> Matches:
    """The jobs a bulk action on ``query`` would touch now, whatever their queue
    (``layout``; None: only the default queue's)."""
    most = settings.bulk_max_jobs
    layout = layout or QueueLayout(base=settings.queue_name)
    page = await search(
        redis,
        layout.all_keys(),
        query,
        limit=most + 1,  # one more than it takes tells whether others are left
        scan_max=max(SCAN_MAX, 4 * most),
    )
    more = len(page.jobs) > most or page.next is not None
    return Matches(page.jobs[:most], more=more)


async def bulk_act(
    redis: Redis,
    settings: Settings,
    query: SearchQuery,
    action: BulkAction,
    expected: int,
    layout: QueueLayout | None = None,
) -> BulkOutcome:
    """Act on every job ``query`` matches, once, whatever its queue (``layout``);
    CountChangedError when they are not ``expected`` many (nothing is done then)."""
    layout = layout or QueueLayout(base=settings.queue_name)
    found = await matching(redis, settings, query, layout)
    if len(found.jobs) != expected:
        raise CountChangedError(expected, len(found.jobs))
    outcome = BulkOutcome(action, found.more)
    act = _ACTIONS[action]
    gate = asyncio.Semaphore(AT_ONCE)

    async def one(job_id: str) -> None:
        async with gate:
            skipped = await act(redis, settings, layout, job_id)
        if skipped is None:
            outcome.done.append(job_id)
        else:
            outcome.skipped[job_id] = skipped

    await asyncio.gather(*(one(job.job_id) for job in found.jobs))
    return outcome


async def _retry(redis: Redis, settings: Settings, layout: QueueLayout, job_id: str) -> str | None:
    try:
        await retry_as_configured(redis, settings, job_id, layout)
    except NotFailedError:
        return "not in the failed-jobs list (not failed, or already retried)"
    except ArgumentsCutError:
        return "its arguments were cut when it failed: it cannot run again"
    return None


async def _cancel(redis: Redis, settings: Settings, layout: QueueLayout, job_id: str) -> str | None:
    try:
        keys = layout.all_keys()
        await cancel_job(redis, keys, job_id, result_ttl=settings.job_result_ttl)
    except JobFinishedError:
        return "already finished"
    except JobNotFoundError:
        return "no longer known"
    return None


async def _delete(redis: Redis, settings: Settings, layout: QueueLayout, job_id: str) -> str | None:
    if await failed_jobs.discard(redis, job_id):
        return None
    return "not in the failed-jobs list"


Action = Callable[[Redis, Settings, QueueLayout, str], Awaitable[str | None]]
_ACTIONS: dict[BulkAction, Action] = {
    BulkAction.RETRY: _retry,
    BulkAction.CANCEL: _cancel,
    BulkAction.DELETE: _delete,
}
