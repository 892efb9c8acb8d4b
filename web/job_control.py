"""HTTP handlers for job control: the failed-jobs list, retrying a failed job, replaying a
finished webhook, cancelling a job."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.observability.masking import masked
from service.queue.cancel import CancelOutcome, JobFinishedError, JobNotFoundError, cancel_job
from service.queue.replay import NotReplayableError, prepare, queue_replay
from service.queue.retry import retry_as_configured
from service.records import failed_jobs
from service.records.failed_jobs import ArgumentsCutError, DeadJob, NotFailedError
from service.records.search_index import SearchIndex
from service.records.status import JOB_ID_PATTERN, task_status
from service.records.times import iso_from_ms
from web.auth import TOKEN_ID
from web.errors import ApiError
from web.keys import DECLARED, QUEUES, REDIS, REGISTRY, SETTINGS
from web.ratelimit import RATE_LIMITS

DEFAULT_PAGE = 20
MAX_PAGE = 100


def _describe(job: DeadJob) -> dict[str, Any]:
    return {
        "task_id": job.job_id,
        "function": job.function,
        # masked as on the dashboard: the list is read by whoever holds a token, not only by
        # the client that queued the job (a retry runs the arguments kept unmasked)
        "args": masked(job.args),
        "kwargs": masked(job.kwargs),
        "arguments_truncated": job.truncated,
        "attempts": job.attempts,
        "error": job.reason,
        "failed_at": iso_from_ms(job.failed_at),
        "enqueued_at": iso_from_ms(job.enqueued_at),
    }


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    # isascii: str.isdigit also takes digits such as "²" that int() refuses
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise ApiError(400, f"{name} must be a whole number from {low} to {high}")
    return int(raw)


NOT_RETRYABLE = "this job is not in the failed-jobs list: only failed jobs can be retried"
ARGUMENTS_CUT = (
    "this job's arguments were too large to keep whole when it failed (only a cut copy is"
    " listed), so it cannot be run again: queue it again with its full arguments"
)


async def status_document(request: web.Request, job_id: str) -> dict[str, Any] | None:
    """``job_id``'s status as ``GET /task-status`` shows it, or None for an unknown job."""
    app = request.app
    return await task_status(app[REDIS], app[QUEUES].all_keys(), job_id, app[DECLARED])


def job_id_from(request: web.Request, name: str = "task_id") -> str:
    """The path's job id; 404 when it cannot be one (no Redis look-up for junk)."""
    job_id = request.match_info[name]
    if not JOB_ID_PATTERN.fullmatch(job_id):
        raise ApiError(404, f"no task with id {job_id!r}")
    return job_id


async def requeue_failed(request: web.Request, job_id: str) -> None:
    """Queue a failed job again under its id; raises NotFailedError when it is not listed,
    409 when only a cut copy of its arguments was kept.

    Shared by ``POST /jobs/{id}/retry`` and the dashboard's Retry button.
    """
    redis, settings = request.app[REDIS], request.app[SETTINGS]
    try:
        await retry_as_configured(redis, settings, job_id, request.app[QUEUES])
    except ArgumentsCutError:
        raise ApiError(409, ARGUMENTS_CUT) from None


async def replay_or_refuse(request: web.Request, job_id: str) -> str:
    """Queue a finished webhook again as a new job linked to it; the new id. 404 when unknown,
    409 when it is not a replayable job, not finished, or its arguments were not kept.

    Shared by ``POST /jobs/{id}/replay`` and the dashboard's Replay button.
    """
    app = request.app
    replayable = [job.name for job in app[REGISTRY] if job.replayable]
    try:
        replay = await prepare(app[REDIS], job_id, replayable=replayable)
    except NotReplayableError as exc:
        await _known_or_404(request, job_id)
        raise ApiError(409, str(exc)) from None
    token_id = request.get(TOKEN_ID)
    if token_id is not None:  # its payload goes back into Redis, like a new request's body
        await app[RATE_LIMITS].check_payload(token_id, replay.size)
    job = next(job for job in app[REGISTRY] if job.name == replay.function)
    queue, priority = app[QUEUES].route(job.name)
    return await queue_replay(
        app[REDIS],
        replay,
        queue=queue,
        priority=priority,
        ttl=app[SETTINGS].job_result_ttl,
        index=SearchIndex.from_settings(app[SETTINGS]),
        search_keys=job.business_keys(job.input.model_construct(**replay.kwargs)),
    )


async def cancel_or_refuse(request: web.Request, job_id: str) -> CancelOutcome:
    """Cancel a job: 404 when unknown, 409 when it has already finished.

    Shared by ``DELETE /jobs/{id}`` and the dashboard's Cancel button.
    """
    redis, settings = request.app[REDIS], request.app[SETTINGS]
    try:
        return await cancel_job(
            redis, request.app[QUEUES].all_keys(), job_id, result_ttl=settings.job_result_ttl
        )
    except JobNotFoundError:
        raise ApiError(404, f"no task with id {job_id!r}") from None
    except JobFinishedError:
        raise ApiError(409, "this job has already finished: there is nothing to cancel") from None


async def list_failed(request: web.Request) -> web.Response:
    offset = _int_param(request, "offset", 0, 0, 10**9)
    limit = _int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    settings = request.app[SETTINGS]
    page = await failed_jobs.page(
        request.app[REDIS],
        offset=offset,
        limit=limit,
        max_age=settings.dead_letter_max_age,
        max_jobs=settings.dead_letter_max_jobs,
    )
    after = offset + len(page.jobs)
    body = {
        "jobs": [_describe(job) for job in page.jobs],
        "total": page.total,
        "offset": offset,
        "limit": limit,
        "next": f"/jobs/failed?offset={after}&limit={limit}" if after < page.total else None,
    }
    return web.json_response(body)


async def retry_failed(request: web.Request) -> web.Response:
    job_id = job_id_from(request)
    try:
        await requeue_failed(request, job_id)
    except NotFailedError:
        await _known_or_404(request, job_id)
        raise ApiError(409, NOT_RETRYABLE) from None
    body = {"message": "Job re-queued", "task_id": job_id}
    return web.json_response(body, status=202, headers={"Location": f"/task-status/{job_id}"})


async def replay_job(request: web.Request) -> web.Response:
    job_id = job_id_from(request)
    new_id = await replay_or_refuse(request, job_id)
    body = {"message": "Replay queued", "task_id": new_id, "replay_of": job_id}
    return web.json_response(body, status=202, headers={"Location": f"/task-status/{new_id}"})


async def cancel(request: web.Request) -> web.Response:
    job_id = job_id_from(request)
    outcome = await cancel_or_refuse(request, job_id)
    status = await task_status(
        request.app[REDIS], request.app[QUEUES].all_keys(), job_id, request.app[DECLARED]
    )
    status = status or {"task_id": job_id}
    return web.json_response(status, status=200 if outcome is CancelOutcome.CANCELLED else 202)


async def _known_or_404(request: web.Request, job_id: str) -> None:
    known = await task_status(
        request.app[REDIS], request.app[QUEUES].all_keys(), job_id, request.app[DECLARED]
    )
    if known is None:
        raise ApiError(404, f"no task with id {job_id!r}")
