"""HTTP handlers: parse and validate, call one function, answer."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from aiohttp import BodyPartReader, web
from redis.exceptions import RedisError

from jobs.webhook_guard import url_refusal
from service.observability.metrics import CONTENT_TYPE
from service.queue.enqueue import JobName, enqueue
from service.records import workers
from service.records.status import task_status
from service.store.database import EmailTakenError
from web.errors import ApiError
from web.idempotency import UPLOAD_DIGEST
from web.keys import DB, REDIS, SETTINGS, WEB_METRICS
from web.ratelimit import RATE_LIMITS
from web.schemas import (
    DailyReportRequest,
    EventRequest,
    RegisterRequest,
    SendEmailRequest,
    WebhookRequest,
    parse_json,
)
from web.uploads import OTHER_FIELDS_LIMIT, receive_image, remove_upload, skip_part

HEALTH_TIMEOUT = 2.0


def accepted(task_id: str, message: str | None = None) -> web.Response:
    body: dict[str, Any] = {"task_id": task_id}
    if message:
        body = {"message": message, **body}
    return web.json_response(body, status=202, headers={"Location": f"/task-status/{task_id}"})


async def send_email(request: web.Request) -> web.Response:
    email = await parse_json(request, SendEmailRequest)
    await request.app[RATE_LIMITS].check_recipient(email.to)
    task_id = await enqueue(
        request.app[REDIS], JobName.SEND_EMAIL, to=email.to, subject=email.subject, body=email.body
    )
    return accepted(task_id, "Email queued!")


async def get_task_status(request: web.Request) -> web.Response:
    task_id = request.match_info["task_id"]
    status = await task_status(request.app[REDIS], request.app[SETTINGS].queue_name, task_id)
    if status is None:
        raise ApiError(404, f"no task with id {task_id!r}")
    return web.json_response(status)


async def upload(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
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
                settings.uploads_dir,
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
        task_id = await enqueue(request.app[REDIS], JobName.PROCESS_IMAGE, upload=name)
    except BaseException:
        await asyncio.get_running_loop().run_in_executor(
            None, remove_upload, settings.uploads_dir, name
        )
        raise
    return accepted(task_id, "Image uploaded, processing...")


async def register(request: web.Request) -> web.Response:
    form = await parse_json(request, RegisterRequest)
    await request.app[RATE_LIMITS].check_recipient(form.email)  # the welcome email's recipient
    db = request.app[DB]
    try:
        user = await db.create_user(form.name, form.email.lower())
    except EmailTakenError:
        raise ApiError(409, "this email address is already registered") from None
    try:
        task_id = await enqueue(request.app[REDIS], JobName.SEND_WELCOME_EMAIL, user_id=user.id)
    except BaseException:
        await db.delete_user(user.id)  # no welcome email could be queued: undo the sign-up
        raise
    body = {"id": user.id, "name": user.name, "email": user.email, "task_id": task_id}
    return web.json_response(body, status=201, headers={"Location": f"/task-status/{task_id}"})


async def log_event(request: web.Request) -> web.Response:
    form = await parse_json(request, EventRequest)
    return accepted(await enqueue(request.app[REDIS], JobName.LOG_EVENT, event=form.event))


async def deliver_webhook(request: web.Request) -> web.Response:
    form = await parse_json(request, WebhookRequest)
    refusal = url_refusal(form.url, request.app[SETTINGS].webhook_allowed_hosts)
    if refusal is not None:
        raise ApiError(400, f"url: {refusal}")
    task_id = await enqueue(
        request.app[REDIS], JobName.DELIVER_WEBHOOK, url=form.url, payload=form.payload
    )
    return accepted(task_id, "Webhook queued!")


async def run_daily_report(request: web.Request) -> web.Response:
    form = await parse_json(request, DailyReportRequest, optional=True)
    kwargs = {"day": form.day.isoformat()} if form.day else {}
    task_id = await enqueue(request.app[REDIS], JobName.DAILY_REPORT, **kwargs)
    return accepted(task_id, "Daily report queued!")


async def health(request: web.Request) -> web.Response:
    redis = request.app[REDIS]
    queue_name = request.app[SETTINGS].queue_name
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            async with redis.pipeline(transaction=False) as pipe:
                pipe.ping()
                pipe.zcard(queue_name)
                _, depth = await pipe.execute()
            alive = await workers.alive(redis, queue_name)
    except (RedisError, OSError, TimeoutError):
        body = {"status": "unavailable", "redis": "unreachable", "worker": None, "queued": None}
        return web.json_response(body, status=503)
    worker = {
        "alive": bool(alive),
        "count": len(alive),
        "last_check": max((w.last_check for w in alive), default=None),
    }
    return web.json_response({"status": "ok", "redis": "ok", "worker": worker, "queued": depth})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; the worker serves its own on WORKER_METRICS_PORT."""
    body = await request.app[WEB_METRICS].render(
        request.app[REDIS], request.app[SETTINGS].queue_name
    )
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response
