"""The aiohttp application factory and the resources it opens and closes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from jobs.registry import REGISTRY as JOBS
from jobs.thumbnails import configure_pillow
from service.observability.metrics import new_registry
from service.runtime import Registry
from service.store.database import open_database
from service.store.redis import open_pool
from service.store.storage import open_storage
from service.store.subscriptions import SharedSubscriptions
from settings import Settings
from web.auth import require_token
from web.deadlines import body_deadline
from web.errors import json_errors
from web.health import add_dependency_check
from web.keys import (
    DB,
    DECLARED,
    QUEUES,
    REDIS,
    REGISTRY,
    SETTINGS,
    STORAGE,
    SUBSCRIPTIONS,
    WEB_METRICS,
)
from web.metrics import WebMetrics
from web.observe import echo_request_id, observe_requests
from web.pages import TEMPLATES, make_environment
from web.proxies import TrustedProxies, strict_transport_security
from web.ratelimit import RATE_LIMITS, RateLimits, limit_per_token
from web.routes import setup_routes
from web.sessions import STATIC_PREFIX
from web.views import PROCESS_IMAGE, SEND_WELCOME_EMAIL

JSON_BODY_LIMIT = 1024 * 1024  # uploads are streamed and limited separately


def _body_limit(settings: Settings, registry: Registry) -> int:
    """The app's body limit: JSON_BODY_LIMIT, or a job's own payload limit when larger (each
    route that queues a job holds its body to that job's limit, web.views)."""
    limits = (job.payload_limit(settings) for job in registry)
    return max([JSON_BODY_LIMIT, *(limit for limit in limits if limit is not None)])


async def _templates(app: web.Application) -> AsyncIterator[None]:
    """The dashboard's templates, read from disk once, off the event loop."""
    app[TEMPLATES] = await asyncio.get_running_loop().run_in_executor(None, make_environment)
    yield


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[REDIS] = await open_pool(settings)
    app[RATE_LIMITS] = RateLimits(
        app[REDIS],
        settings.rate_limit_per_token,
        settings.rate_limit_per_recipient,
        (settings.payload_quota_per_token, settings.payload_quota_window),
    )
    app[SUBSCRIPTIONS] = SharedSubscriptions(app[REDIS])  # live streams, Idempotency-Key waits
    yield
    await app[SUBSCRIPTIONS].close()
    await app[REDIS].aclose(close_connection_pool=True)


async def _files(app: web.Application) -> AsyncIterator[None]:
    """Where uploads go (checked: a wrong STORAGE_URL, endpoint or key stops the app here,
    naming the setting; /health reports it after), and the limits the upload door applies."""
    settings = app[SETTINGS]
    configure_pillow(settings.max_image_pixels)
    app[STORAGE] = await open_storage(settings)
    add_dependency_check(app, "storage", app[STORAGE].check)
    yield
    await app[STORAGE].close()


async def _database(app: web.Application) -> AsyncIterator[None]:
    """The users database (DATABASE_URL), its schema brought up to date; /health pings it."""
    app[DB] = await open_database(app[SETTINGS])
    add_dependency_check(app, "database", app[DB].ping)
    yield
    await app[DB].close()


async def _plain_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """No Python/aiohttp versions in answers: they only help an attacker pick an exploit."""
    response.headers["Server"] = "jobservice"


async def _not_stored(request: web.Request, response: web.StreamResponse) -> None:
    """API answers carry job data (arguments, results, errors, task ids): no browser or proxy
    cache may keep them. Answers that say otherwise (the dashboard's static files and
    thumbnails) keep what they say."""
    if "Cache-Control" not in response.headers and not request.path.startswith(STATIC_PREFIX):
        response.headers["Cache-Control"] = "no-store"


def create_app(settings: Settings, registry: Registry = JOBS) -> web.Application:
    """Build the app; the templates, Redis and the database open on start-up (no I/O here).

    ``registry`` holds the jobs the routes queue and document (jobs/registry.py).
    """
    for name in (PROCESS_IMAGE, SEND_WELCOME_EMAIL):
        registry[name]  # the bespoke routes' jobs: an UnknownJobError here, not per request
    # observe_requests first: it logs and counts the status the client finally gets; the
    # proxy's headers are applied before anything looks at the client's address or scheme
    proxies = TrustedProxies(settings.trusted_proxies)
    app = web.Application(
        middlewares=[
            observe_requests,
            json_errors,
            proxies.middleware,
            body_deadline,
            require_token,
            limit_per_token,
        ],
        client_max_size=_body_limit(settings, registry),
    )
    app[SETTINGS] = settings
    app[REGISTRY] = registry
    app[DECLARED] = registry.declared(settings)
    app[QUEUES] = registry.layout(settings)
    app[WEB_METRICS] = WebMetrics(new_registry())
    app.on_response_prepare.extend(
        [echo_request_id, _plain_server_header, strict_transport_security, _not_stored]
    )
    app.cleanup_ctx.extend([_templates, _redis, _files, _database])
    setup_routes(app)
    return app
