"""The dashboard's handlers: pages (overview, job, upload, mail), sign-in, and actions.

Handlers stay thin: they read one thing from ``service/`` and render it, or call one action
and redirect back. Access is checked before they run (web/auth.py: bearer token or session).
"""

from __future__ import annotations

import asyncio
import re

from aiohttp import web
from yarl import URL

from service.dashboard.catalog import catalog
from service.dashboard.crons import UnknownCronError, cron_schedules, find
from service.dashboard.graphs import graphs as read_graphs
from service.dashboard.jobview import job_view
from service.dashboard.mailbox import read_mailbox
from service.dashboard.overview import overview as read_overview
from service.observability.masking import masked
from service.queue import pause
from service.queue.enqueue import enqueue
from service.records import breakers, failed_jobs, latency, schedules
from service.records.failed_jobs import NotFailedError
from service.records.search_index import SearchIndex
from service.records.status import JOB_ID_PATTERN
from service.records.times import now_ms
from service.store.storage import CONTENT_TYPES, UPLOADS
from web.auth import matching_token, token_fingerprint
from web.breaker_control import close_or_refuse
from web.cron_control import cron_name_from
from web.errors import ApiError
from web.job_control import (
    NOT_RETRYABLE,
    cancel_or_refuse,
    job_id_from,
    replay_or_refuse,
    requeue_failed,
)
from web.keys import DECLARED, QUEUES, REDIS, REGISTRY, SETTINGS, STORAGE
from web.pages import render
from web.ratelimit import RATE_LIMITS, check_mail_recipients
from web.sessions import (
    COOKIE,
    SESSION,
    SIGN_IN_PATH,
    clear_cookie,
    close_session,
    forget_cookie,
    open_session,
    same_origin,
    set_cookie,
)

HOME = "/dashboard"
SIGN_IN_BODY_LIMIT = 4096  # a token and a dashboard path fit many times over
# A bare file name (no separator, no leading dot) ending like the thumbnails the job writes
THUMBNAIL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}_thumb\.(jpg|png|gif|webp)")


def see_other(location: str) -> web.Response:
    """303: after a form post, the browser fetches ``location`` with GET."""
    return web.Response(status=303, headers={"Location": location})


def _safe_next(target: str | None) -> str:
    """Only a dashboard path may follow sign-in: never another site (``//evil``)."""
    if not target or not target.startswith(HOME) or not target.isprintable():
        return HOME
    return target if URL(target).path.startswith(HOME) else HOME


async def overview(request: web.Request) -> web.Response:
    redis, settings = request.app[REDIS], request.app[SETTINGS]
    state = await read_overview(redis, settings, request.app[QUEUES])
    registry = request.app[REGISTRY]
    crons = await cron_schedules(redis, settings, registry)
    jobs = catalog(registry, settings)
    paused = await pause.pause_state(redis, settings.queue_name)
    drawn = await read_graphs(redis, (job.name for job in registry))
    tracked = await breakers.tracked(redis)
    return render(
        request,
        "overview.html",
        overview=state,
        crons=crons,
        jobs=jobs,
        pause=paused,
        graphs=drawn,
        breakers=tracked,
        relative_error=latency.RELATIVE_ERROR,
    )


async def job_page(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    view = None
    if JOB_ID_PATTERN.fullmatch(job_id):
        view = await job_view(
            request.app[REDIS], request.app[QUEUES].all_keys(), job_id, request.app[DECLARED]
        )
    if view is None:
        return render(request, "missing.html", status=404, job_id=job_id)
    declared = request.app[REGISTRY].get(str(view.status.get("function")))
    return render(
        request,
        "job.html",
        job=view,
        result=masked(view.status.get("result")),
        replayable=declared is not None and declared.replayable,
    )


async def upload_page(request: web.Request) -> web.Response:
    return render(request, "upload.html", max_bytes=request.app[SETTINGS].max_upload_bytes)


async def mail_page(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if not settings.dashboard_mail_page:
        raise ApiError(404, "the Mail page is on only in development (DASHBOARD_MAIL_PAGE)")
    loop = asyncio.get_running_loop()
    messages = await loop.run_in_executor(None, read_mailbox, settings.mail_dir)
    return render(request, "mail.html", messages=messages)


async def thumbnail(request: web.Request) -> web.StreamResponse:
    """A thumbnail from the uploads area, by the name the job reported; nothing else.

    The name must be a plain ``<name>_thumb.<ext>`` (no separator, no leading dot), so it
    cannot leave the area; locally a symlink placed there is not followed. The content is
    streamed from storage chunk by chunk, never read whole into memory.
    """
    name = request.match_info["name"]
    if not THUMBNAIL_NAME.fullmatch(name):
        raise ApiError(404, "no such thumbnail")
    async with request.app[STORAGE].reader(UPLOADS, name) as found:
        if found is None:
            raise ApiError(404, "no such thumbnail")
        response = web.StreamResponse(
            headers={
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'",
                "Cache-Control": "private, max-age=3600",
            }
        )
        response.content_type = CONTENT_TYPES[name[name.rindex(".") :]]
        response.content_length = found.size
        response.last_modified = found.modified
        await response.prepare(request)
        async for chunk in found.chunks:
            await response.write(chunk)
        await response.write_eof()
        return response


async def run_cron_now(request: web.Request) -> web.Response:
    try:
        job = find(request.app[REGISTRY], request.match_info["name"])
    except UnknownCronError:
        raise ApiError(404, "no cron schedule has this name") from None
    # what it would mail counts as if asked through the API (the daily report's recipients)
    await check_mail_recipients(request.app, job, job.input())
    index = SearchIndex.from_settings(request.app[SETTINGS])
    queue, priority = request.app[QUEUES].route(job.name)
    job_id = await enqueue(
        request.app[REDIS], job.name, {}, index=index, queue=queue, priority=priority
    )
    return see_other(f"{HOME}/jobs/{job_id}")


async def pause_cron(request: web.Request) -> web.Response:
    """A schedule's **Pause**: as ``POST /crons/{name}/pause``."""
    await schedules.pause(request.app[REDIS], cron_name_from(request), now_ms())
    return see_other(f"{HOME}#crons")


async def resume_cron(request: web.Request) -> web.Response:
    """A paused schedule's **Resume**: as ``POST /crons/{name}/resume``."""
    await schedules.resume(request.app[REDIS], cron_name_from(request))
    return see_other(f"{HOME}#crons")


async def close_breaker(request: web.Request) -> web.Response:
    """A circuit breaker's **Close now**: as ``POST /breakers/{destination}/close``."""
    await close_or_refuse(request)
    return see_other(f"{HOME}#breakers")


async def pause_queue(request: web.Request) -> web.Response:
    """The overview's **Pause**: as ``POST /queue/pause``; the banner then says so."""
    await pause.pause(request.app[REDIS], request.app[SETTINGS].queue_name)
    return see_other(HOME)


async def resume_queue(request: web.Request) -> web.Response:
    """The banner's **Resume**: as ``POST /queue/resume``."""
    await pause.resume(request.app[REDIS], request.app[SETTINGS].queue_name)
    return see_other(HOME)


async def retry_job(request: web.Request) -> web.Response:
    """Re-queue a failed job (same id) and follow it on its page."""
    job_id = job_id_from(request, "job_id")
    try:
        await requeue_failed(request, job_id)
    except NotFailedError:
        raise ApiError(409, NOT_RETRYABLE) from None
    return see_other(f"{HOME}/jobs/{job_id}")


async def replay_job(request: web.Request) -> web.Response:
    """Send a finished webhook again as a new job, and follow that one on its page."""
    new_id = await replay_or_refuse(request, job_id_from(request, "job_id"))
    return see_other(f"{HOME}/jobs/{new_id}")


async def delete_job(request: web.Request) -> web.Response:
    """Drop a job from the failed-jobs list without running it again."""
    if not await failed_jobs.discard(request.app[REDIS], job_id_from(request, "job_id")):
        raise ApiError(409, "this job is not in the failed-jobs list")
    return see_other(HOME)


async def cancel_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    await cancel_or_refuse(request, job_id)
    return see_other(f"{HOME}/jobs/{job_id}")


async def sign_in_page(request: web.Request) -> web.Response:
    return render(request, "sign_in.html", next=_safe_next(request.query.get("next")), error="")


async def sign_in(request: web.Request) -> web.Response:
    """Check the token from the form; on success open a session and go where asked.

    Anyone may post here, so everything that needs no body is checked before the body is
    read: its declared size, the origin, and the per-address rate limit.
    """
    settings = request.app[SETTINGS]
    if request.content_length is None and request.body_exists:
        # A chunked body could be any size; a request with neither header has no body at
        # all (RFC 9112, 6.3) and is answered like an empty form.
        raise ApiError(411, "send the sign-in form with a Content-Length")
    if (request.content_length or 0) > SIGN_IN_BODY_LIMIT:
        raise ApiError(413, f"the sign-in form is larger than {SIGN_IN_BODY_LIMIT} bytes")
    if not same_origin(request):
        raise ApiError(403, "cross-site request refused: it must come from this dashboard")
    await request.app[RATE_LIMITS].check_sign_in(request.remote or "unknown")
    form = await request.post()
    target = _safe_next(str(form.get("next", "")))
    token = matching_token(str(form.get("token", "")), settings.api_tokens)
    if token is None:
        error = "That token is not valid."
        return render(request, "sign_in.html", status=403, next=target, error=error)
    ttl = int(settings.dashboard_session_hours * 3600)
    await forget_cookie(request.app[REDIS], request.cookies.get(COOKIE, ""))
    cookie, _ = await open_session(request.app[REDIS], token_fingerprint(token), ttl)
    response = see_other(target)
    set_cookie(response, request, cookie, ttl)
    return response


async def sign_out(request: web.Request) -> web.Response:
    session = request.get(SESSION)
    if session is not None:
        await close_session(request.app[REDIS], session)
    response = see_other(SIGN_IN_PATH)
    clear_cookie(response)
    return response
