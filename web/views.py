"""HTTP handlers: parse and validate, call one function, answer."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.typedefs import Handler
from pydantic import BaseModel
from redis.exceptions import RedisError

from service.engine.queue_counts import queue_counts
from service.engine.queues import Priority
from service.observability.metrics import CONTENT_TYPE
from service.queue.enqueue import GateClosed, enqueue
from service.records import breakers, workers
from service.records.search_index import SearchIndex
from service.records.times import iso_from_ms, now_ms
from service.runtime import Job
from service.store import keys
from service.store.database import Database, DatabaseUnavailableError, EmailTakenError
from service.store.storage import UPLOADS, Storage, StorageUnavailableError
from web.auth import TOKEN_ID
from web.breaker_control import describe as describe_breaker
from web.errors import ApiError
from web.health import dependency_states
from web.idempotency import UPLOAD_DIGEST
from web.job_control import status_document
from web.keys import DB, QUEUES, REDIS, REGISTRY, SETTINGS, STORAGE, WEB_METRICS
from web.ratelimit import RATE_LIMITS, check_mail_recipients
from web.schemas import (
    Addressed,
    RegisterRequest,
    Scheduling,
    api_request_model,
    job_kwargs,
    parse_body,
    parse_json,
    request_model,
    requested_priority,
    validated,
)
from web.uploads import OTHER_FIELDS_LIMIT, receive_image, skip_part

logger = logging.getLogger("jobservice.web")

HEALTH_TIMEOUT = 2.0
# The jobs the two bespoke routes queue (a stored upload, a created user); web.app checks
# at start-up that the registry declares them.
PROCESS_IMAGE = "process_image"
SEND_WELCOME_EMAIL = "send_welcome_email"


def accepted(
    task_id: str, message: str | None = None, run_at_ms: int | None = None
) -> web.Response:
    body: dict[str, Any] = {"task_id": task_id}
    if message:
        body = {"message": message, **body}
    if run_at_ms is not None:
        body["scheduled_for"] = iso_from_ms(run_at_ms)
    return web.json_response(body, status=202, headers={"Location": f"/task-status/{task_id}"})


def _within_payload_limit(request: web.Request, job: Job, size: int | None) -> None:
    """413 when a body of ``size`` bytes is over ``job``'s payload limit (its declaration)."""
    limit = job.payload_limit(request.app[SETTINGS])
    if limit is not None and size is not None and size > limit:
        raise ApiError(
            413, f"request body too large for {job.name}: {size} bytes, the limit is {limit}"
        )


async def _queue(
    request: web.Request,
    job: Job,
    job_input: BaseModel,
    when: Scheduling,
    message: str | None,
    size: int,
    priority: Priority | None = None,
) -> web.Response:
    """Queue a validated job: its recipients counted, its body's ``size`` counted against the
    token's payload quota, at the time asked for, on its queue at ``priority`` (None: its
    declared one)."""
    run_at_ms = when.run_at_ms()
    queue, priority = request.app[QUEUES].route(job.name, priority)
    limits, token_id = request.app[RATE_LIMITS], request.get(TOKEN_ID)
    if token_id is not None and limits.counts_recipients:
        # looked at first: a refusal here uses up no recipient's limit
        await limits.check_payload(token_id, size, count=False)
    await check_mail_recipients(request.app, job, job_input)
    # the bytes are counted in the enqueue's own call: a job over the quota is not queued
    quota = None if token_id is None else limits.payload_gate(token_id, size)
    try:
        task_id = await enqueue(
            request.app[REDIS],
            job.name,
            job_kwargs(job, job_input),
            run_at_ms=run_at_ms,
            index=SearchIndex.from_settings(request.app[SETTINGS]),
            search_keys=job.business_keys(job_input),
            queue=queue,
            priority=priority,
            gate=None if quota is None else quota.call,
        )
    except GateClosed as closed:
        assert quota is not None
        raise limits.payload_refused(quota, quota.wait(closed.reply)) from None
    return accepted(task_id, message, run_at_ms)


def queue_job(name: str, message: str | None = None, *, optional_body: bool = False) -> Handler:
    """The handler of a route that queues the job ``name``: its body is the job's input,
    plus ``run_at`` or ``delay``; with ``optional_body``, no body means no arguments."""

    async def handler(request: web.Request) -> web.Response:
        job = request.app[REGISTRY][name]
        priority = requested_priority(request)
        _within_payload_limit(request, job, request.content_length)  # before reading it
        raw = await request.read()
        _within_payload_limit(request, job, len(raw))  # a chunked body says no length
        settings = request.app[SETTINGS]
        body = parse_body(raw, request_model(job), settings=settings, optional=optional_body)
        return await _queue(request, job, body, body, message, len(raw), priority)

    handler.__name__ = handler.__qualname__ = name  # as the OpenAPI test and logs name it
    return handler


async def queue_any_job(request: web.Request) -> web.Response:
    """``POST /jobs``: any job the registry lets the API queue, by name."""
    requested_priority(request)  # a bad query parameter is refused before the body is read
    raw = await request.read()
    name = validated(Addressed, raw).function
    job = request.app[REGISTRY].get(name)
    if job is None or not job.api:
        raise ApiError(404, f"no job named {name!r} may be queued through the API")
    _within_payload_limit(request, job, len(raw))
    body = validated(api_request_model(job), raw, request.app[SETTINGS])
    priority = requested_priority(request, body.priority)
    return await _queue(request, job, body.kwargs, body, "Job queued!", len(raw), priority)


async def get_task_status(request: web.Request) -> web.Response:
    task_id = request.match_info["task_id"]
    status = await status_document(request, task_id)
    if status is None:
        raise ApiError(404, f"no task with id {task_id!r}")
    return web.json_response(status)


async def upload(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    queue, priority = request.app[QUEUES].route(PROCESS_IMAGE, requested_priority(request))
    if request.content_length and request.content_length > settings.max_upload_bytes + 64 * 1024:
        raise ApiError(413, f"file is larger than the {settings.max_upload_bytes}-byte limit")
    if not request.content_type.startswith("multipart/"):
        raise ApiError(400, "send the image as multipart/form-data in a field named 'file'")
    reader = await request.multipart()
    budget = OTHER_FIELDS_LIMIT
    async for part in reader:
        if isinstance(part, BodyPartReader) and part.name == "file":
            digest = hashlib.sha256()
            name = await receive_image(
                part,
                request.app[STORAGE],
                settings.max_upload_bytes,
                settings.max_image_pixels,
                digest,
            )
            request[UPLOAD_DIGEST] = digest.hexdigest()
            break
        budget = await skip_part(part, budget)
    else:
        raise ApiError(400, "multipart field 'file' is required")
    try:
        task_id = await enqueue(
            request.app[REDIS],
            PROCESS_IMAGE,
            {"upload": name},
            index=SearchIndex.from_settings(settings),
            queue=queue,
            priority=priority,
        )
    except BaseException:
        await _forget_upload(request.app[STORAGE], name)  # no object without its job
        raise
    return accepted(task_id, "Image uploaded, processing...")


async def _forget_upload(storage: Storage, name: str) -> None:
    """Delete an upload whose job could not be queued. Should storage fail too, the error
    that matters is the queue's: the object is then left for the cleanup cron."""
    try:
        await storage.delete(UPLOADS, name)
    except StorageUnavailableError as exc:
        logger.warning("upload %s could not be deleted after a failed enqueue: %s", name, exc)


async def register(request: web.Request) -> web.Response:
    queue, priority = request.app[QUEUES].route(SEND_WELCOME_EMAIL, requested_priority(request))
    form = await parse_json(request, RegisterRequest)
    await request.app[RATE_LIMITS].check_recipient(form.email)  # the welcome email's recipient
    db = request.app[DB]
    try:
        user = await db.create_user(form.name, form.email)  # stored lower-cased
    except EmailTakenError:
        raise ApiError(409, "this email address is already registered") from None
    welcome = request.app[REGISTRY][SEND_WELCOME_EMAIL]
    # found by the user's id (its declaration) and by the address it goes to
    search_keys = (*welcome.business_keys(welcome.input(user_id=user.id)), user.email)
    try:
        task_id = await enqueue(
            request.app[REDIS],
            SEND_WELCOME_EMAIL,
            {"user_id": user.id},
            index=SearchIndex.from_settings(request.app[SETTINGS]),
            search_keys=search_keys,
            queue=queue,
            priority=priority,
        )
    except BaseException:
        await _undo_sign_up(db, user.id)  # no welcome email could be queued
        raise
    body = {"id": user.id, "name": user.name, "email": user.email, "task_id": task_id}
    return web.json_response(body, status=201, headers={"Location": f"/task-status/{task_id}"})


async def _undo_sign_up(db: Database, user_id: int) -> None:
    try:
        await db.delete_user(user_id)
    except DatabaseUnavailableError:
        # both the queue and the database failed: say which row stays, for someone to remove
        logger.error("user %d stays without a welcome email: the database went away", user_id)
        raise


async def health(request: web.Request) -> web.Response:
    """Redis, every other dependency (web.health), the workers, and the jobs waiting,
    deferred and running (service.engine.queue_counts)."""
    redis, layout = request.app[REDIS], request.app[QUEUES]
    queue_name = request.app[SETTINGS].queue_name
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            now = now_ms()
            counts, paused_at, alive, dependencies, held, *named = await asyncio.gather(
                queue_counts(redis, layout.all_keys(), now),
                redis.get(keys.paused(queue_name)),
                workers.alive(redis, queue_name),
                dependency_states(request.app),
                breakers.open_ones(redis),
                *(queue_counts(redis, layout.keys_of(queue), now) for queue in layout.queues),
            )
    except (RedisError, OSError, TimeoutError):
        down = {"status": "unavailable", "redis": "unreachable", "worker": None, "queued": None}
        return web.json_response(down, status=503)
    worker = {
        "alive": bool(alive),
        "count": len(alive),
        "last_check": max((w.last_check for w in alive), default=None),
    }
    status = "ok" if all(state == "ok" for state in dependencies.values()) else "degraded"
    body: dict[str, Any] = {"status": status, "redis": "ok", "dependencies": dependencies}
    jobs = {"waiting": counts.waiting, "deferred": counts.deferred, "running": counts.running}
    pause = {"paused": paused_at is not None, "paused_at": iso_from_ms(paused_at)}
    queues = {
        queue: {
            "waiting": depth.waiting,
            "deferred": depth.deferred,
            "running": depth.running,
            "workers": sum(w.serves(queue) for w in alive),
        }
        for queue, depth in zip(layout.queues, named, strict=True)
    }
    # an open breaker is a destination's outage, not this service's: listed, status unchanged
    open_breakers = {"open_breakers": [describe_breaker(breaker) for breaker in held]}
    return web.json_response(
        {
            **body,
            "worker": worker,
            "queued": counts.queued,
            "jobs": jobs,
            "queues": queues,
            **pause,
            **open_breakers,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; the worker serves its own on WORKER_METRICS_PORT."""
    body = await request.app[WEB_METRICS].render(request.app[REDIS], request.app[QUEUES])
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response
